"""Locale selection for the UI: the user's choice, else the browser's, else English."""

from __future__ import annotations

from flask import request
from flask_babel import Babel
from flask_login import current_user

LOCALES = ("en", "de")
babel = Babel()


def select_locale() -> str:
    chosen = getattr(current_user, "locale", None) if current_user else None
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(LOCALES) or "en"

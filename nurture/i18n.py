"""Locale selection for the UI: the user's choice, else the browser's, else English."""

from __future__ import annotations

from flask import Flask, request
from flask_babel import Babel, get_locale, gettext
from flask_login import current_user

from nurture.errors import UserFacingError

LOCALES = ("en", "de")
babel = Babel()


def select_locale() -> str:
    chosen = getattr(current_user, "locale", None) if current_user else None
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(LOCALES) or "en"


def translate_error(exc: UserFacingError) -> str:
    """The error's message in the request's language."""
    return gettext(exc.message, **exc.params)


def init_i18n(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale)

    @app.context_processor
    def _locale() -> dict[str, object]:
        # Templates set <html lang> from this; screen readers pick their voice by it.
        return {"get_locale": lambda: str(get_locale() or "en")}

"""Errors meant for people: the message is a gettext msgid, translated where it is shown."""

from __future__ import annotations

from typing import Any


def N_(message: str) -> str:
    """Mark a msgid for extraction (pybabel -k N_) without translating it here."""
    return message


class UserFacingError(ValueError):
    """A refused operation; ``message % params`` is the English text, views translate it."""

    def __init__(self, message: str, **params: Any) -> None:
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)

"""Request-scoped access for adapters: one session per request, the clock, the settings.

Services never import this; views call these and pass plain values on.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app, g
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.state import Nurture


def state() -> Nurture:
    return current_app.extensions["nurture"]


def settings() -> Settings:
    return state().settings


def now() -> datetime:
    return state().clock.now()


def db_session() -> Session:
    """The request's session, created on first use; the view commits, teardown closes."""
    if "db_session" not in g:
        g.db_session = state().db.session()
    return g.db_session


def close_db_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        # Anything the view did not commit is rolled back here, never half-kept.
        session.close()

"""Role checks for views, and flask-login's user loader."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import abort
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user

from nurture.auth.models import Role, User
from nurture.web.context import db_session

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please log in to see this page.")
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    # The id carries the session version: a password change or deactivation bumps it and so
    # invalidates every cookie issued before.
    try:
        raw_id, raw_version = user_id.split(":", 1)
        uid, version = int(raw_id), int(raw_version)
    except ValueError:
        return None
    user = db_session().get(User, uid)
    if user is None or user.session_version != version or not user.active:
        return None
    return user


def roles_required(*roles: Role) -> Callable[[F], F]:
    """Allow only logged-in users with one of ``roles``; others get 403."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def me() -> User:
    """The logged-in user as a real ORM object (not flask-login's proxy), for services."""
    return current_user._get_current_object()  # type: ignore[no-any-return]


def login_required(view: F) -> F:
    return roles_required(*Role)(view)

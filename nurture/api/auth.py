"""Bearer-token authentication for the API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request

from nurture.api.errors import ApiError
from nurture.auth.models import Role, User
from nurture.auth.tokens import authenticate_token
from nurture.web.context import db_session, now

F = TypeVar("F", bound=Callable[..., Any])


def token_required(*roles: Role) -> Callable[[F], F]:
    """Require ``Authorization: Bearer <token>`` of a user with one of ``roles`` (any if none)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, raw = header.partition(" ")
            if scheme.lower() != "bearer" or not raw.strip():
                raise ApiError(
                    401, "unauthorized", "Send an API token as 'Authorization: Bearer <token>'."
                )
            token = authenticate_token(db_session(), raw.strip(), now=now())
            if token is None:
                raise ApiError(401, "invalid_token", "The API token is unknown or revoked.")
            # last_used_at is bookkeeping of its own; keep it even if the view fails later.
            db_session().commit()
            if roles and token.user.role not in roles:
                raise ApiError(
                    403,
                    "forbidden",
                    "This token's user may not use this endpoint.",
                    {"required_roles": [r.value for r in roles]},
                )
            g.api_token = token
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def api_user() -> User:
    return g.api_token.user  # type: ignore[no-any-return]


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400/415 ApiError that says what is wrong."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return data

from __future__ import annotations

from typing import Any

from flask import jsonify, url_for
from flask.typing import ResponseReturnValue

from nurture.api import bp
from nurture.api.auth import api_user, json_body, token_required
from nurture.api.errors import ApiError
from nurture.api.openapi import openapi_document
from nurture.auth.models import ApiToken, User
from nurture.auth.tokens import TokenError, create_token, get_user_token, list_tokens, revoke_token
from nurture.web.context import db_session, now, settings


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.value,
        "active": user.active,
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": _iso(token.created_at),
        "last_used_at": _iso(token.last_used_at),
        "revoked_at": _iso(token.revoked_at),
    }


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document(settings().base_url))


@bp.get("/me")
@token_required()
def me() -> ResponseReturnValue:
    return jsonify(user_json(api_user()))


@bp.get("/tokens")
@token_required()
def tokens_list() -> ResponseReturnValue:
    return jsonify({"items": [token_json(t) for t in list_tokens(db_session(), api_user())]})


@bp.post("/tokens")
@token_required()
def tokens_create() -> ResponseReturnValue:
    body = json_body()
    name = body.get("name")
    if not isinstance(name, str):
        raise ApiError(422, "validation_error", "Invalid token.", {"name": "A string is required."})
    try:
        token, raw = create_token(db_session(), api_user(), name, now=now())
    except TokenError as exc:
        raise ApiError(422, "validation_error", str(exc), {"name": str(exc)}) from None
    db_session().commit()
    payload = token_json(token) | {"token": raw}
    return jsonify(payload), 201, {"Location": url_for("api.tokens_list")}


@bp.delete("/tokens/<int:token_id>")
@token_required()
def tokens_revoke(token_id: int) -> ResponseReturnValue:
    token = get_user_token(db_session(), api_user(), token_id)
    if token is None:
        raise ApiError(404, "not_found", f"You have no token with id {token_id}.")
    revoke_token(db_session(), token, now=now())
    db_session().commit()
    return "", 204

"""/api/v1/custom-fields: which typed fields ``custom`` of a contact accepts, and adding one."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.typing import ResponseReturnValue

from nurture.api import bp
from nurture.api.auth import json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.contacts.custom_fields import CustomFieldError, create_field, definitions
from nurture.contacts.models import CustomField
from nurture.web.context import db_session, now


def custom_field_json(field: CustomField) -> dict[str, Any]:
    return {
        "id": field.id,
        "key": field.key,
        "label": field.label,
        "type": field.kind,
        "choices": list(field.choices),
        "created_at": field.created_at.isoformat(),
    }


@bp.get("/custom-fields")
@token_required()
def custom_fields_list() -> ResponseReturnValue:
    fields = definitions(db_session()).values()
    return jsonify({"items": [custom_field_json(field) for field in fields]})


def _strings(body: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    """key, label, type and choices of the body, or a 422 naming every field of a wrong type."""
    errors: dict[str, str] = {}
    for name in ("key", "label", "type"):
        if not isinstance(body.get(name), str):
            errors[name] = "must be a string"
    choices = body.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        errors["choices"] = "must be a list of strings"
    for name in sorted(set(body) - {"key", "label", "type", "choices"}):
        errors[name] = "is not a property of a custom field"
    if errors:
        raise ApiError(422, "validation_error", "Invalid custom field.", errors)
    return body["key"], body["label"], body["type"], choices


@bp.post("/custom-fields")
@token_required(Role.ADMIN)
def custom_fields_create() -> ResponseReturnValue:
    key, label, kind, choices = _strings(json_body())
    try:
        field = create_field(
            db_session(), key=key, label=label, kind=kind, choices=choices, now=now()
        )
    except CustomFieldError as exc:
        # The API calls the kind "type", as the settings page does.
        name = "type" if exc.field == "kind" else exc.field
        details = {name: str(exc)} if name else {}
        raise ApiError(422, "validation_error", str(exc), details) from None
    db_session().commit()
    return jsonify(custom_field_json(field)), 201

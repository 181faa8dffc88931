"""POST /api/v1/contacts/{id}/unsubscribe: the customer's systems pass on an objection."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.api import bp
from nurture.api.auth import json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.consent.ledger import Origin
from nurture.consent.models import Consent, Topic
from nurture.consent.unsubscribe import MAX_REASON, unsubscribe_all
from nurture.contacts.models import Contact
from nurture.web.context import db_session, now, settings

WRITERS = (Role.ADMIN, Role.MARKETER)


def consent_states(session: Session, contact_id: int) -> dict[str, dict[str, Any]]:
    """The contact's current state per topic slug, with the time it last changed."""
    rows = session.execute(
        select(Topic.slug, Consent.state, Consent.changed_at)
        .join(Topic, Topic.id == Consent.topic_id)
        .where(Consent.contact_id == contact_id)
        .order_by(Topic.slug)
    )
    return {
        slug: {"state": state.value, "since": changed_at.isoformat()}
        for slug, state, changed_at in rows
    }


def _reason() -> str | None:
    # The body is optional: a bare POST unsubscribes without a reason.
    if not request.get_data(cache=True):
        return None
    reason = json_body().get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise ApiError(
            422, "validation_error", "Some fields are invalid.", {"reason": "must be a string"}
        )
    if len(reason) > MAX_REASON:
        raise ApiError(
            422,
            "validation_error",
            "Some fields are invalid.",
            {"reason": f"must be at most {MAX_REASON} characters"},
        )
    return reason


@bp.post("/contacts/<int:contact_id>/unsubscribe")
@token_required(*WRITERS)
def contacts_unsubscribe(contact_id: int) -> ResponseReturnValue:
    session = db_session()
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise ApiError(404, "not_found", f"There is no contact with id {contact_id}.")
    reason = _reason()
    # The caller is the customer's server, not the person: its address is no evidence of theirs.
    origin = Origin(source=f"api:{g.api_token.name}")
    result = unsubscribe_all(
        session, contact, origin=origin, reason=reason, now=now(), settings=settings()
    )
    session.commit()
    return jsonify(
        {
            "contact_id": contact.id,
            "suppressed": True,
            "changed": result.changed,
            "withdrawn": list(result.withdrawn),
            "consents": consent_states(session, contact.id),
        }
    )

"""/api/v1: topics, a contact's consent ledger, the suppression list, GDPR export and erasure."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from nurture.api import bp
from nurture.api.auth import api_user, json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.consent.gdpr import erase_contact, export_contact
from nurture.consent.models import Suppression, SuppressionReason, Topic
from nurture.consent.proof import (
    current_states,
    entry_json,
    proof_entries,
    states_json,
    utc_seconds,
)
from nurture.consent.topics import TopicError, create_topic, list_topics
from nurture.contacts.models import Contact
from nurture.contacts.queries import MAX_ID
from nurture.web.context import db_session, now, settings

WRITERS = (Role.ADMIN, Role.MARKETER)
TOPIC_FIELDS = {
    "name": str,
    "slug": str,
    "kind": str,
    "own_similar_products": bool,
    "description": str,
}


def topic_json(topic: Topic) -> dict[str, Any]:
    return {
        "id": topic.id,
        "slug": topic.slug,
        "name": topic.name,
        "description": topic.description,
        "kind": topic.kind.value,
        "own_similar_products": topic.own_similar_products,
        "created_at": utc_seconds(topic.created_at),
    }


def _contact_or_404(contact_id: int) -> Contact:
    contact = db_session().get(Contact, contact_id) if contact_id <= MAX_ID else None
    if contact is None:
        raise ApiError(404, "not_found", f"There is no contact with id {contact_id}.")
    return contact


@bp.get("/topics")
@token_required()
def topics_list() -> ResponseReturnValue:
    return jsonify({"items": [topic_json(topic) for topic in list_topics(db_session())]})


@bp.post("/topics")
@token_required(Role.ADMIN)
def topics_create() -> ResponseReturnValue:
    body = json_body()
    errors = {
        name: "is not a property of a topic" for name in sorted(set(body) - set(TOPIC_FIELDS))
    }
    for name, kind in TOPIC_FIELDS.items():
        if name in body and not isinstance(body[name], kind):
            errors[name] = "must be a boolean" if kind is bool else "must be a string"
    for name in ("name", "slug"):
        if name not in body:
            errors[name] = "is required"
    if errors:
        raise ApiError(422, "validation_error", "Invalid topic.", errors)
    try:
        topic = create_topic(
            db_session(),
            name=body["name"],
            slug=body["slug"],
            kind=body.get("kind", "marketing"),
            own_similar_products=body.get("own_similar_products", False),
            description=body.get("description", ""),
            now=now(),
        )
    except TopicError as exc:
        details = {exc.field: str(exc)} if exc.field else {}
        raise ApiError(422, "validation_error", str(exc), details) from None
    db_session().commit()
    return jsonify(topic_json(topic)), 201


@bp.get("/contacts/<int:contact_id>/consents")
@token_required()
def contact_consents(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    session = db_session()
    return jsonify(
        {
            "contact_id": contact.id,
            "ledger": [entry_json(item) for item in proof_entries(session, contact.id)],
            "current": states_json(current_states(session, contact.id)),
        }
    )


@bp.get("/suppressions")
@token_required(*WRITERS)
def suppressions_list() -> ResponseReturnValue:
    args = request.args
    try:
        limit = min(max(int(args.get("limit", 100)), 1), 1000)
        after = int(args["after"]) if "after" in args else None
        reason = SuppressionReason(args["reason"]) if "reason" in args else None
    except ValueError:
        raise ApiError(
            400,
            "invalid_query",
            "limit and after must be numbers; reason one of "
            + ", ".join(r.value for r in SuppressionReason)
            + ".",
        ) from None
    query = select(Suppression).order_by(Suppression.id).limit(limit)
    if after is not None:
        query = query.where(Suppression.id > after)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    rows = db_session().scalars(query).all()
    items = [
        {
            "id": row.id,
            "address_hash": row.address_hash,
            "reason": row.reason.value,
            "created_at": utc_seconds(row.created_at),
        }
        for row in rows
    ]
    next_after = rows[-1].id if len(rows) == limit else None
    return jsonify({"items": items, "next_after": next_after})


@bp.get("/contacts/<int:contact_id>/export")
@token_required(*WRITERS)
def contact_export(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    config = settings()
    document = export_contact(
        db_session(),
        contact,
        secret=config.suppression_secret,
        mail_domain=config.mail_domain,
        now=now(),
    )
    response: Response = jsonify(document)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/contacts/<int:contact_id>")
@token_required(Role.ADMIN)
def contact_erase(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    erasure = erase_contact(
        db_session(),
        contact,
        secret=settings().suppression_secret,
        by=api_user(),
        source=f"api:{g.api_token.name}",
        now=now(),
    )
    db_session().commit()
    return jsonify(
        {
            "contact_id": erasure.contact_id,
            "erased_at": utc_seconds(erasure.erased_at),
            "suppressed": True,
            "ledger_entries_blanked": erasure.ledger_entries,
            "erasure_entries": erasure.erasure_entries,
            "events_emptied": erasure.events,
            "messages_anonymised": erasure.messages,
        }
    )

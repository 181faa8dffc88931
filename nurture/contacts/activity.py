"""Business events about a contact (orders, complaints, cancellations, …) and the timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.contacts.models import Contact
from nurture.contacts.store import find_by_email
from nurture.errors import N_, UserFacingError
from nurture.events import Event, record_event

SEVERITIES = ("low", "medium", "high")
# type → {field: (kind, required)}; kinds: text, money, currency, severity
ACTIVITY_TYPES: dict[str, dict[str, tuple[str, bool]]] = {
    "order": {
        "amount": ("money", True),
        "currency": ("currency", True),
        "order_id": ("text", False),
    },
    "complaint": {"reason": ("text", True), "severity": ("severity", True)},
    "cancellation": {"product": ("text", True), "reason": ("text", False)},
    "expected_revenue": {
        "period": ("text", True),
        "amount": ("money", True),
        "currency": ("currency", True),
    },
    # ``by``: who made the call or wrote the note (the UI passes the user's email).
    "call": {"text": ("text", True), "by": ("text", False)},
    "meeting": {"text": ("text", True), "by": ("text", False)},
    "note": {"text": ("text", True), "by": ("text", False)},
}


class ActivityError(UserFacingError):
    """Some items are invalid; ``errors`` maps "index.field" to a message. Nothing was recorded."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__(N_("Invalid events: %(fields)s"), fields=", ".join(sorted(errors)))


def _value(kind: str, value: Any) -> str:
    if kind == "money":
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise ValueError("must be a decimal amount such as 19.90") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError("must be a decimal amount such as 19.90")
        # Stored as text: JSON floats would turn 19.90 into 19.899999….
        return str(amount.quantize(Decimal("0.01")))
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be non-empty text")
    text = " ".join(value.split())
    if kind == "currency":
        if len(text) != 3 or not text.isalpha():
            raise ValueError("must be a three-letter currency code such as EUR")
        return text.upper()
    if kind == "severity":
        if text.lower() not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
        return text.lower()
    if len(text) > 2000:
        raise ValueError("must be at most 2000 characters")
    return text


def _occurred(value: Any, now: datetime) -> datetime:
    if value in (None, ""):
        return now
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError("must be an ISO 8601 time such as 2026-03-01T10:00:00+01:00") from None
    if moment.tzinfo is None:
        raise ValueError("needs a time zone offset, e.g. +01:00 or Z")
    moment = moment.astimezone(UTC)
    if moment > now:
        raise ValueError("lies in the future")
    return moment


def _contact_id(session: Session, item: dict[str, Any]) -> int:
    if "contact_id" in item:
        contact_id = item["contact_id"]
        if not isinstance(contact_id, int) or session.get(Contact, contact_id) is None:
            raise ValueError("is not a known contact id")
        return contact_id
    if "email" in item and isinstance(item["email"], str):
        contact = find_by_email(session, item["email"])
        if contact is None:
            raise ValueError("belongs to no contact; create the contact first")
        return contact.id
    raise ValueError("name the contact with contact_id or email")


def _clean(session: Session, item: Any, now: datetime) -> tuple[dict[str, Any], dict[str, str]]:
    if not isinstance(item, dict):
        return {}, {"": "must be an object"}
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    kind = item.get("type")
    if kind not in ACTIVITY_TYPES:
        errors["type"] = f"must be one of {', '.join(ACTIVITY_TYPES)}"
    else:
        payload = {}
        for field, (value_kind, required) in ACTIVITY_TYPES[kind].items():
            if field not in item or item[field] in (None, ""):
                if required:
                    errors[field] = "is required"
                continue
            try:
                payload[field] = _value(value_kind, item[field])
            except ValueError as exc:
                errors[field] = str(exc)
        clean["payload"] = payload
        clean["type"] = kind
    for name, parse in (
        ("contact", lambda: _contact_id(session, item)),
        ("occurred_at", lambda: _occurred(item.get("occurred_at"), now)),
    ):
        try:
            clean[name] = parse()
        except ValueError as exc:
            errors[
                "email"
                if name == "contact" and "email" in item
                else "contact_id"
                if name == "contact"
                else name
            ] = str(exc)
    if "id" in item:
        if not isinstance(item["id"], str) or not 0 < len(item["id"]) <= 100:
            errors["id"] = "must be text of 1 to 100 characters"
        else:
            clean["id"] = item["id"]
    return clean, errors


def record_activities(
    session: Session, items: list[Any], *, now: datetime, source: str
) -> list[int | None]:
    """Validate all items, then record them; an item whose ``id`` was seen before is skipped.

    All or nothing: one invalid item refuses the batch, so a client can simply resend it.
    Returns the new event ids, None for duplicates.
    """
    cleaned = []
    errors: dict[str, str] = {}
    for index, item in enumerate(items):
        clean, item_errors = _clean(session, item, now)
        errors |= {f"{index}.{field}".rstrip("."): msg for field, msg in item_errors.items()}
        cleaned.append(clean)
    if errors:
        raise ActivityError(errors)
    ids: list[int | None] = []
    for clean in cleaned:
        dedup = f"{source}:{clean['type']}:{clean['id']}" if "id" in clean else None
        event = record_event(
            session,
            clean["type"],
            now=now,
            occurred_at=clean["occurred_at"],
            contact_id=clean["contact"],
            payload=clean["payload"] | {"source": source},
            dedup_key=dedup,
        )
        ids.append(event.id if event else None)
    return ids


def timeline(
    session: Session,
    contact_id: int,
    *,
    types: list[str] | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Event]:
    """The contact's events, newest first, optionally of some types, keyset-paged."""
    stmt = (
        select(Event)
        .where(Event.contact_id == contact_id)
        .order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    )
    if types:
        stmt = stmt.where(Event.type.in_(types))
    if before_id is not None:
        anchor = session.get(Event, before_id)
        if anchor is not None:
            stmt = stmt.where(
                (Event.occurred_at < anchor.occurred_at)
                | ((Event.occurred_at == anchor.occurred_at) & (Event.id < anchor.id))
            )
    return list(session.scalars(stmt))

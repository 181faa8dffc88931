"""Changing contacts by hand (the edit and new forms): whole-record saves that say what changed.

Unlike imports and the API, a form shows every field: an empty input clears its field, and the
tags typed are the tags kept (a removed tag goes). Each save that changes something records a
``contact_updated`` event naming the fields, never their values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import User
from nurture.contacts.custom_fields import definitions
from nurture.contacts.fields import WRITABLE, ContactDataError, clean_contact_data
from nurture.contacts.models import Contact
from nurture.contacts.store import update_contact, upsert_contact
from nurture.errors import N_, UserFacingError
from nurture.events import record_event

PLAIN_FIELDS = tuple(sorted(WRITABLE - {"tags", "custom"}))
DEFAULT_SOURCE = "manual"
TAKEN = "belongs to another contact"


class ContactExists(UserFacingError):
    """A new contact would duplicate ``contact``; nothing was written."""

    def __init__(self, contact: Contact) -> None:
        self.contact = contact
        super().__init__(N_("A contact with this email already exists."))


def _number_taken(session: Session, number: str | None, contact_id: int | None) -> bool:
    if not number:
        return False
    other = session.scalar(select(Contact.id).where(Contact.customer_number == number))
    return other is not None and other != contact_id


def _snapshot(contact: Contact) -> dict[str, Any]:
    values = {field: getattr(contact, field) for field in PLAIN_FIELDS}
    values["tags"] = tuple(sorted(contact.tags or []))
    values |= {f"custom.{key}": value for key, value in (contact.custom or {}).items()}
    return values


def create_contact(session: Session, data: dict[str, Any], *, now: datetime) -> Contact:
    """A new contact from a form; ContactExists if the email is known, never an update.

    ContactDataError names every invalid field (a customer number in use is one of them).
    """
    defs = definitions(session)
    values = clean_contact_data(data, require_email=True, custom_fields=defs)
    existing = session.scalar(select(Contact).where(Contact.email == values["email"]))
    if existing is not None:
        raise ContactExists(existing)
    # The upsert matches by customer number first: a taken number would update that contact.
    if _number_taken(session, values.get("customer_number"), None):
        raise ContactDataError({"customer_number": TAKEN})
    source = values.get("source") or DEFAULT_SOURCE
    contact, created = upsert_contact(
        session, data | {"source": source}, now=now, source=source, custom_fields=defs
    )
    if not created:
        # Someone created the same person a moment ago; the caller rolls our update back.
        raise ContactExists(contact)
    return contact


def edit_contact(
    session: Session, contact: Contact, data: dict[str, Any], *, now: datetime, by: User
) -> list[str]:
    """Save a whole form onto ``contact``; returns the changed field names (custom: custom.<key>).

    On ContactDataError the session may hold half-applied values: the caller rolls back.
    """
    values = clean_contact_data(data, require_email=False, custom_fields=definitions(session))
    if _number_taken(session, values.get("customer_number"), contact.id):
        raise ContactDataError({"customer_number": TAKEN})
    before = _snapshot(contact)
    update_contact(session, contact, {k: v for k, v in data.items() if k != "tags"}, now=now)
    # update_contact merges tags (an import must not drop them); a form replaces them.
    if "tags" in values and values["tags"] != sorted(contact.tags or []):
        contact.tags = values["tags"]
        contact.updated_at = now
    after = _snapshot(contact)
    changed = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    if changed:
        session.flush()
        record_event(
            session,
            "contact_updated",
            now=now,
            contact_id=contact.id,
            payload={"fields": changed, "by": by.email, "by_id": by.id, "source": f"user:{by.id}"},
        )
    return changed

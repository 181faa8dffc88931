"""Creating, finding and changing contacts; every write is an upsert, so no duplicate arises."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nurture.contacts.custom_fields import Definitions, definitions
from nurture.contacts.fields import ContactDataError, clean_contact_data, normalise_email
from nurture.contacts.models import Contact, Lifecycle
from nurture.events import record_event

MAX_ATTEMPTS = 3
SEARCH_MAX = 320


def find_existing(session: Session, email: str, customer_number: str | None) -> Contact | None:
    """The contact an upsert of ``email``/``customer_number`` would update, if any."""
    # The customer number wins: an ERP that changed a customer's address still means the
    # same customer.
    if customer_number:
        found = session.scalar(select(Contact).where(Contact.customer_number == customer_number))
        if found is not None:
            return found
    return session.scalar(select(Contact).where(Contact.email == email))


def _apply(session: Session, contact: Contact, values: dict[str, Any], *, now: datetime) -> bool:
    """Set the given fields; True if anything changed. Tags are merged, never dropped."""
    changed = False
    for field, value in values.items():
        if field == "tags":
            value = sorted(set(contact.tags or []) | set(value))
        if field == "custom":
            merged = {**(contact.custom or {}), **value}
            value = {key: item for key, item in merged.items() if item is not None}
        if getattr(contact, field) != value:
            if field == "email" and _taken(session, value, contact.id):
                raise ContactDataError({"email": "belongs to another contact"})
            setattr(contact, field, value)
            changed = True
    if changed:
        contact.updated_at = now
        session.flush()
    return changed


def _taken(session: Session, email: str, contact_id: int) -> bool:
    other = session.scalar(select(Contact.id).where(Contact.email == email))
    return other is not None and other != contact_id


def upsert_contact(
    session: Session,
    data: dict[str, Any],
    *,
    now: datetime,
    source: str = "",
    custom_fields: Definitions | None = None,
) -> tuple[Contact, bool]:
    """Create the contact or update the one with the same email or customer number.

    Returns (contact, created). Safe under concurrency: the insert is ON CONFLICT DO NOTHING
    against both unique keys, and a lost race falls back to updating the winner's row.
    """
    values = clean_contact_data(
        data, require_email=True, custom_fields=custom_fields or definitions(session)
    )
    email = values["email"]
    for _attempt in range(MAX_ATTEMPTS):
        existing = find_existing(session, email, values.get("customer_number"))
        if existing is not None:
            _apply(session, existing, values, now=now)
            return existing, False
        row = {
            "lifecycle": Lifecycle.LEAD,
            "tags": [],
            "custom": {},
            "source": source,
            **values,
            "created_at": now,
            "updated_at": now,
        }
        if "custom" in values:
            # None means "remove": an update drops the key (see _apply), a new row just omits it.
            row["custom"] = {k: v for k, v in values["custom"].items() if v is not None}
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        new_id = session.scalar(
            insert(Contact).values(**row).on_conflict_do_nothing().returning(Contact.id)
        )
        if new_id is not None:
            contact = session.get(Contact, new_id)
            assert contact is not None
            record_event(
                session, "contact_created", now=now, contact_id=new_id, payload={"source": source}
            )
            return contact, True
        # Another transaction inserted the same person between our look-up and our insert;
        # its row is committed now (PostgreSQL waited for it), so the next look-up finds it.
    raise RuntimeError(f"could not upsert contact {email} after {MAX_ATTEMPTS} attempts")


def update_contact(
    session: Session, contact: Contact, data: dict[str, Any], *, now: datetime
) -> bool:
    """Change fields of a known contact; True if anything changed."""
    values = clean_contact_data(data, require_email=False, custom_fields=definitions(session))
    return _apply(session, contact, values, now=now)


def find_by_email(session: Session, email: str) -> Contact | None:
    try:
        normalised = normalise_email(email)
    except ValueError:
        return None
    return session.scalar(select(Contact).where(Contact.email == normalised))


def search_condition(term: str) -> ColumnElement[bool] | None:
    """Prefix match on email, last name or company, case-insensitive; None for no term.

    The expressions are exactly those of the indexes (``email``, ``lower(last_name)``,
    ``lower(company)`` with varchar_pattern_ops on PostgreSQL), so a prefix is an index range.
    """
    term = " ".join(term.split())[:SEARCH_MAX].lower()
    if not term:
        return None
    return or_(
        # Emails are stored lower-cased, so the plain column serves.
        Contact.email.startswith(term, autoescape=True),
        func.lower(Contact.last_name).startswith(term, autoescape=True),
        func.lower(Contact.company).startswith(term, autoescape=True),
    )


def list_contacts(
    session: Session,
    *,
    after_id: int | None = None,
    limit: int = 50,
    lifecycle: Lifecycle | None = None,
    search: str | None = None,
) -> list[Contact]:
    """A page of contacts by id (keyset paging stays fast at millions of rows)."""
    stmt = select(Contact).order_by(Contact.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Contact.id > after_id)
    if lifecycle is not None:
        stmt = stmt.where(Contact.lifecycle == lifecycle)
    condition = search_condition(search) if search else None
    if condition is not None:
        stmt = stmt.where(condition)
    return list(session.scalars(stmt))

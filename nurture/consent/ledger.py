"""The consent ledger and the current state it implies.

``record`` is the one way consent changes: it appends the evidence and moves the per-topic state
in the same transaction, so the send gate (which reads ``consents``) and the proof (which reads
``consent_ledger``) can never disagree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.consent.models import (
    GRANTING,
    Action,
    Consent,
    ConsentEntry,
    ConsentState,
    ConsentText,
    Topic,
)
from nurture.errors import N_, UserFacingError

MAX_USER_AGENT = 500


class ConsentError(UserFacingError):
    """A consent change that the rules do not allow."""


def text_version(session: Session, text: str, *, language: str, now: datetime) -> ConsentText:
    """The stored version of ``text`` (created on first use); identical wording, one row."""
    text = text.strip()
    if not text:
        raise ConsentError(N_("The consent text shown to the person is required."))
    digest = hashlib.sha256(f"{language}\n{text}".encode()).hexdigest()
    found = session.scalar(select(ConsentText).where(ConsentText.sha256 == digest))
    if found is not None:
        return found
    version = ConsentText(sha256=digest, language=language, text=text, created_at=now)
    with session.begin_nested():
        session.add(version)
    return version


def _next_state(current: Consent | None, action: Action) -> ConsentState | None:
    """The state after ``action``; None when the action leaves the state as it is."""
    state = current.state if current is not None else ConsentState.NONE
    if state is ConsentState.OBJECTED and action is Action.EXISTING_CUSTOMER:
        # An objection ends the existing-customer basis for good (§7(3) Nr. 3 UWG).
        raise ConsentError(
            N_("This person objected; the existing-customer basis cannot be used again.")
        )
    if action is Action.REQUESTED:
        # A new request never lowers a consent already given.
        return ConsentState.PENDING if state in (ConsentState.NONE, ConsentState.PENDING) else None
    if action in GRANTING:
        return ConsentState.GRANTED
    if action is Action.EXISTING_CUSTOMER:
        return None if state is ConsentState.GRANTED else ConsentState.EXISTING_CUSTOMER
    if action is Action.OBJECTED:
        return ConsentState.OBJECTED
    if action is Action.EXPIRED:
        return ConsentState.NONE if state is ConsentState.PENDING else None
    # withdrawn, erased
    return ConsentState.OBJECTED if state is ConsentState.OBJECTED else ConsentState.NONE


@dataclass(frozen=True)
class Origin:
    """Where a change came from: the evidence every ledger row carries."""

    source: str
    ip: str | None = None
    user_agent: str | None = None


def record(
    session: Session,
    *,
    contact_id: int,
    topic: Topic,
    action: Action,
    origin: Origin,
    now: datetime,
    text: ConsentText | None = None,
    request_id: int | None = None,
    mail_message_id: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> ConsentEntry:
    """Append one ledger entry and move the contact's state for the topic accordingly."""
    current = session.get(Consent, (contact_id, topic.id))
    state = _next_state(current, action)
    entry = ConsentEntry(
        contact_id=contact_id,
        topic_id=topic.id,
        action=action,
        at=now.replace(microsecond=0),
        source=origin.source[:200],
        ip=origin.ip,
        user_agent=(origin.user_agent or None) and origin.user_agent[:MAX_USER_AGENT],
        text_id=text.id if text is not None else None,
        text_hash=text.sha256 if text is not None else None,
        request_id=request_id,
        mail_message_id=mail_message_id,
        evidence=evidence or {},
    )
    session.add(entry)
    if state is not None:
        if current is None:
            current = Consent(contact_id=contact_id, topic_id=topic.id, state=state, changed_at=now)
            session.add(current)
        current.state = state
        current.changed_at = now
        if state in (ConsentState.GRANTED, ConsentState.EXISTING_CUSTOMER):
            current.granted_at = now
        elif state is not ConsentState.PENDING:
            current.granted_at = None
    session.flush()
    return entry


def states(session: Session, contact_id: int) -> dict[int, Consent]:
    """The contact's current state per topic id."""
    rows = session.scalars(select(Consent).where(Consent.contact_id == contact_id))
    return {row.topic_id: row for row in rows}


def history(session: Session, contact_id: int) -> list[ConsentEntry]:
    """Every ledger entry of the contact, oldest first: the printable proof."""
    return list(
        session.scalars(
            select(ConsentEntry)
            .where(ConsentEntry.contact_id == contact_id)
            .order_by(ConsentEntry.at, ConsentEntry.id)
        )
    )


def topic_by_slug(session: Session, slug: str) -> Topic | None:
    return session.scalar(select(Topic).where(Topic.slug == slug))

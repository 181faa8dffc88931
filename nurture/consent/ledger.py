"""The consent ledger and the current state it implies.

``record`` (and ``record_many``, its batch form for the contact import) is the one way consent
changes: it appends the evidence and moves the per-topic state in the same transaction, so the
send gate (which reads ``consents``) and the proof (which reads ``consent_ledger``) can never
disagree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
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
    granted_at: datetime | None = None,
) -> ConsentEntry:
    """Append one ledger entry and move the contact's state for the topic accordingly.

    ``granted_at`` dates a granted basis back to when it was given (an imported consent's proof
    date), so dormancy counts from then; it never lies after ``now``.
    """
    current = session.get(Consent, (contact_id, topic.id))
    state = _next_state(current, action)
    entry = ConsentEntry(
        **_entry_values(
            contact_id,
            topic,
            action,
            origin,
            now,
            text,
            request_id=request_id,
            mail_message_id=mail_message_id,
            evidence=evidence,
        )
    )
    session.add(entry)
    if state is not None:
        if current is None:
            current = Consent(contact_id=contact_id, topic_id=topic.id, state=state, changed_at=now)
            session.add(current)
        _move(current, state, now=now, granted_at=granted_at)
    session.flush()
    return entry


def _entry_values(
    contact_id: int,
    topic: Topic,
    action: Action,
    origin: Origin,
    now: datetime,
    text: ConsentText | None,
    *,
    request_id: int | None = None,
    mail_message_id: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "topic_id": topic.id,
        "action": action,
        "at": now.replace(microsecond=0),
        "source": origin.source[:200],
        "ip": origin.ip,
        "user_agent": (origin.user_agent or None) and origin.user_agent[:MAX_USER_AGENT],
        "text_id": text.id if text is not None else None,
        "text_hash": text.sha256 if text is not None else None,
        "request_id": request_id,
        "mail_message_id": mail_message_id,
        "evidence": evidence or {},
    }


def _granted_at(
    state: ConsentState, *, now: datetime, granted_at: datetime | None, before: datetime | None
) -> datetime | None:
    if state in (ConsentState.GRANTED, ConsentState.EXISTING_CUSTOMER):
        return min(granted_at, now) if granted_at is not None else now
    return before if state is ConsentState.PENDING else None


def _move(
    current: Consent, state: ConsentState, *, now: datetime, granted_at: datetime | None
) -> None:
    current.granted_at = _granted_at(
        state, now=now, granted_at=granted_at, before=current.granted_at
    )
    current.state = state
    current.changed_at = now


@dataclass(frozen=True)
class Change:
    """One (contact, topic) for ``record_many``, with the state row its writer loaded."""

    contact_id: int
    topic: Topic
    current: Consent | None  # None: the pair has no state yet
    evidence: dict[str, Any]


def record_many(
    session: Session,
    changes: list[Change],
    *,
    action: Action,
    origin: Origin,
    now: datetime,
    text: ConsentText | None = None,
    granted_at: datetime | None = None,
) -> None:
    """``record`` for a batch writer (the contact import) that loaded the states itself: the
    same entries and state rules, written with two bulk INSERTs instead of a look-up and two
    round trips per change. Each (contact, topic) may appear once."""
    entries = []
    new_states = []
    for change in changes:
        state = _next_state(change.current, action)
        entries.append(
            _entry_values(
                change.contact_id, change.topic, action, origin, now, text, evidence=change.evidence
            )
        )
        if state is None:
            continue
        if change.current is not None:
            _move(change.current, state, now=now, granted_at=granted_at)
            continue
        new_states.append(
            {
                "contact_id": change.contact_id,
                "topic_id": change.topic.id,
                "state": state,
                "changed_at": now,
                "granted_at": _granted_at(state, now=now, granted_at=granted_at, before=None),
            }
        )
    if entries:
        session.execute(insert(ConsentEntry), entries)
    if new_states:
        session.execute(insert(Consent), new_states)
    session.flush()


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

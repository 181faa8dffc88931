"""GDPR rights of a contact: the export of everything stored about them (Art. 15, 20) and
erasure (Art. 17) that keeps only what must stay and carries no personal data.

What erasure keeps: the suppression hash (so the address is never mailed or imported again),
the ledger rows with their facts and times (topic, action, text hash) but without IP, user
agent, source details or evidence, the events as anonymous rows (type and time, payload
emptied; their contact becomes NULL with the contact), the outbox rows with the address, name,
subject, render context and server reply replaced, and one ``contact_erased`` event that says
who erased which contact id and when.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from nurture.auth.models import User
from nurture.consent.ledger import Origin, record
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    SuppressionReason,
    Topic,
)
from nurture.consent.proof import (
    current_states,
    entry_json,
    proof_entries,
    states_json,
    utc_seconds,
)
from nurture.consent.suppression import suppress, suppression_of
from nurture.contacts.custom_fields import definitions
from nurture.contacts.models import Contact, DuplicateDismissal, ImportJob
from nurture.events import Event, record_event
from nurture.mail import outbox
from nurture.mail.identity import message_id_header
from nurture.mail.models import CapturedMail, Message, MessageState

EXPORT_FORMAT = "nurture.contact-export/1"
# What an erased contact's outbox rows show instead of the address (.invalid never resolves).
ERASED_ADDRESS = "erased@erased.invalid"
ERASED_DOMAIN = "erased.invalid"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return utc_seconds(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


# -- export ----------------------------------------------------------------------------------


def _contact_fields(contact: Contact) -> dict[str, Any]:
    return {
        column.key: _plain(getattr(contact, column.key))
        for column in Contact.__table__.columns
        if column.key != "custom"
    }


def _custom_fields(session: Session, contact: Contact) -> dict[str, Any]:
    defs = definitions(session)
    return {
        key: {"label": defs[key].label if key in defs else None, "value": value}
        for key, value in sorted((contact.custom or {}).items())
    }


def _events(session: Session, contact_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Event).where(Event.contact_id == contact_id).order_by(Event.occurred_at, Event.id)
    )
    return [
        {
            "id": event.id,
            "type": event.type,
            "occurred_at": utc_seconds(event.occurred_at),
            "recorded_at": utc_seconds(event.recorded_at),
            "message_id": event.message_id,
            "payload": event.payload or {},
        }
        for event in rows
    ]


def _messages(session: Session, contact_id: int, mail_domain: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Message).where(Message.contact_id == contact_id).order_by(Message.id)
    )
    return [
        {
            "id": message.id,
            "message_id_header": message_id_header(message.token, mail_domain),
            "to": message.to_addr,
            "to_name": message.to_name,
            "subject": message.subject,
            "purpose": message.purpose.value,
            "topic": message.topic,
            "state": message.state.value,
            "reason": message.reason,
            "created_at": utc_seconds(message.created_at),
            "not_before": utc_seconds(message.not_before),
            "sent_at": utc_seconds(message.sent_at) if message.sent_at else None,
            "updated_at": utc_seconds(message.updated_at),
        }
        for message in rows
    ]


def export_contact(
    session: Session, contact: Contact, *, secret: str, mail_domain: str, now: datetime
) -> dict[str, Any]:
    """Everything nurture stores about ``contact``, as one JSON-ready document."""
    suppression = suppression_of(session, secret=secret, email=contact.email)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": utc_seconds(now),
        "contact": _contact_fields(contact),
        "custom_fields": _custom_fields(session, contact),
        "consent": {
            "ledger": [
                entry_json(item, with_text=True) for item in proof_entries(session, contact.id)
            ],
            "current": states_json(current_states(session, contact.id)),
        },
        "events": _events(session, contact.id),
        "messages": _messages(session, contact.id, mail_domain),
        "suppression": {
            "suppressed": suppression is not None,
            "reason": suppression.reason.value if suppression is not None else None,
            "since": utc_seconds(suppression.created_at) if suppression is not None else None,
        },
    }


# -- erasure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    contact_id: int
    erased_at: datetime
    ledger_entries: int  # entries whose personal fields were blanked
    erasure_entries: int  # one ``erased`` entry per topic the contact had
    events: int  # events whose payload was emptied
    messages: int  # outbox rows anonymised (queued ones also cancelled)


def _blank_ledger(session: Session, contact_id: int) -> int:
    # The kind of source stays ("form", "api", "import", "user", …): how consent came about is
    # a fact about the process; the details (file names, tokens) may name the person.
    sources = session.scalars(
        select(ConsentEntry.source).where(ConsentEntry.contact_id == contact_id).distinct()
    ).all()
    blanked = 0
    for source in sources:
        result = session.execute(
            update(ConsentEntry)
            .where(ConsentEntry.contact_id == contact_id, ConsentEntry.source == source)
            .values(source=source.split(":", 1)[0], ip=None, user_agent=None, evidence={})
            .execution_options(synchronize_session=False)
        )
        blanked += getattr(result, "rowcount", 0) or 0
    return blanked


def _anonymise_messages(session: Session, contact_id: int, now: datetime) -> list[int]:
    ids = list(session.scalars(select(Message.id).where(Message.contact_id == contact_id)))
    unsent = session.scalars(
        select(Message.id).where(
            Message.contact_id == contact_id,
            Message.state.in_((MessageState.QUEUED, MessageState.UNCERTAIN)),
        )
    )
    for message_id in unsent:
        # Nothing more goes to a person who is gone; a row in flight finishes as it is.
        outbox.transition(
            session,
            [MessageState.QUEUED, MessageState.UNCERTAIN],
            MessageState.CANCELLED,
            now=now,
            where={"message_id": message_id},
            reason="erased",
        )
    session.execute(
        update(Message)
        .where(Message.contact_id == contact_id)
        .values(
            to_addr=ERASED_ADDRESS,
            to_name="",
            to_domain=ERASED_DOMAIN,
            context={},
            subject=None,
            # A server's reply often quotes the address ("<anna@…>: user unknown").
            smtp_response=None,
        )
        .execution_options(synchronize_session=False)
    )
    if ids:
        # The capture transport's copy of the mail itself (embedded mode).
        session.execute(
            delete(CapturedMail)
            .where(CapturedMail.message_id.in_(ids))
            .execution_options(synchronize_session=False)
        )
    return ids


def _without_lines(data: bytes, needles: set[bytes]) -> bytes:
    return b"".join(
        line
        for line in data.splitlines(keepends=True)
        if not any(needle in line.lower() for needle in needles)
    )


def _scrub_import_jobs(session: Session, email: str) -> None:
    """Drop the lines naming the address from uploaded files and error reports.

    Import jobs keep their file for a while and their error report for good; both may hold
    the person's row. Erasure is rare and the files are few, so they are read one by one.
    """
    needles = {email.lower().encode("utf-8")}
    with contextlib.suppress(UnicodeEncodeError):
        needles.add(email.lower().encode("cp1252"))
    text_needle = email.lower()
    job_ids = list(session.scalars(select(ImportJob.id)))
    for job_id in job_ids:
        job = session.get(ImportJob, job_id)
        assert job is not None
        data = job.data or b""
        if any(needle in data.lower() for needle in needles):
            job.data = _without_lines(data, needles)
        if text_needle in (job.errors_csv or "").lower():
            job.errors_csv = "".join(
                line
                for line in job.errors_csv.splitlines(keepends=True)
                if text_needle not in line.lower()
            )
        session.flush()
        session.expunge(job)


def erase_contact(
    session: Session,
    contact: Contact,
    *,
    secret: str,
    by: User | None,
    source: str,
    now: datetime,
) -> Erasure:
    """Erase ``contact`` (GDPR Art. 17); flushes, never commits.

    ``source`` names who asked ("user:<id>", "api:<token name>"); it goes into the ``erased``
    ledger entries, which with the ``contact_erased`` event are the evidence of the erasure.
    """
    session.refresh(contact, with_for_update=True)
    contact_id = contact.id
    email = contact.email
    by_id = by.id if by is not None else None

    suppress(session, secret=secret, email=email, reason=SuppressionReason.ERASED, now=now)

    blanked = _blank_ledger(session, contact_id)
    topic_ids = set(
        session.scalars(
            select(ConsentEntry.topic_id).where(ConsentEntry.contact_id == contact_id).distinct()
        )
    ) | set(session.scalars(select(Consent.topic_id).where(Consent.contact_id == contact_id)))
    for topic_id in sorted(topic_ids):
        topic = session.get(Topic, topic_id)
        assert topic is not None
        record(
            session,
            contact_id=contact_id,
            topic=topic,
            action=Action.ERASED,
            origin=Origin(source=source),
            now=now,
            evidence={"erased_contact_id": contact_id, "by_user_id": by_id},
        )

    message_ids = _anonymise_messages(session, contact_id, now)
    events = session.execute(
        update(Event)
        .where(or_(Event.contact_id == contact_id, Event.message_id.in_(message_ids)))
        .values(payload={})
        .execution_options(synchronize_session=False)
    )
    for column in (ConsentRequest.contact_id, Consent.contact_id):
        session.execute(
            delete(column.class_)
            .where(column == contact_id)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        delete(DuplicateDismissal)
        .where(
            or_(DuplicateDismissal.low_id == contact_id, DuplicateDismissal.high_id == contact_id)
        )
        .execution_options(synchronize_session=False)
    )
    _scrub_import_jobs(session, email)

    # The bulk statements bypassed the identity map; nothing loaded before may show old data.
    session.expire_all()
    session.delete(contact)
    session.flush()
    # Foreign keys turned the contact's ledger entries, events and messages anonymous (SET NULL).
    record_event(
        session,
        "contact_erased",
        now=now,
        payload={"contact_id": contact_id, "by_user_id": by_id},
    )
    session.expire_all()
    return Erasure(
        contact_id=contact_id,
        erased_at=now,
        ledger_entries=blanked,
        erasure_entries=len(topic_ids),
        events=getattr(events, "rowcount", 0) or 0,
        messages=len(message_ids),
    )


def erasure_entries(session: Session, contact_id: int) -> list[ConsentEntry]:
    """The ``erased`` ledger entries of an erased contact (found by the id in their evidence)."""
    rows = session.scalars(
        select(ConsentEntry)
        .where(ConsentEntry.action == Action.ERASED, ConsentEntry.contact_id.is_(None))
        .order_by(ConsentEntry.id)
    )
    return [row for row in rows if (row.evidence or {}).get("erased_contact_id") == contact_id]

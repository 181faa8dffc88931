"""Unsubscribing: the signed links every mail carries, and withdrawing everything at once.

A link names an outbox message (through its random token, signed for one purpose); the message
names the contact. Nothing in a link reveals an address or an id, and a link never expires: an
objection must work however old the mail is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent.ledger import Origin, record, states
from nurture.consent.models import Action, ConsentState, SuppressionReason, Topic
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.events import record_event
from nurture.mail.identity import LinkSigner
from nurture.mail.models import Message

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
# Far above any token LinkSigner makes; longer input is refused before any work is done.
MAX_SIGNED_LENGTH = 200
MAX_REASON = 500
# States that still allow mail, or may turn into it; unsubscribing ends each of them.
_ACTIVE = (ConsentState.GRANTED, ConsentState.EXISTING_CUSTOMER, ConsentState.PENDING)


@dataclass(frozen=True)
class LinkTarget:
    """What a signed link points at: the mail it came in and the person it was sent to."""

    message: Message
    contact: Contact


def resolve_link(
    session: Session, signer: LinkSigner, purpose: str, signed: str
) -> LinkTarget | None:
    """The message and contact behind ``signed``; None when the link is forged, made for
    another purpose, names no message, or the message has no contact (a test mail, or the
    person was erased)."""
    if len(signed) > MAX_SIGNED_LENGTH:
        return None
    token = signer.load(purpose, signed)
    if token is None:
        return None
    message = session.scalar(select(Message).where(Message.token == token))
    if message is None or message.contact_id is None:
        return None
    contact = session.get(Contact, message.contact_id)
    if contact is None:
        return None
    return LinkTarget(message=message, contact=contact)


def lock_contact(session: Session, contact: Contact) -> None:
    """Serialise changes of one person's consent (PostgreSQL row lock; SQLite has one writer).

    Mailbox providers retry one-click POSTs, and two at once must not both see "granted" and
    each append a withdrawal.
    """
    session.execute(select(Contact.id).where(Contact.id == contact.id).with_for_update())


def withdrawal_for(state: ConsentState) -> Action:
    """How ending a basis is recorded: an objection ends the existing-customer exception for
    good (§7(3) Nr. 4 UWG), anything else is withdrawn."""
    return Action.OBJECTED if state is ConsentState.EXISTING_CUSTOMER else Action.WITHDRAWN


@dataclass(frozen=True)
class Unsubscribed:
    """What ``unsubscribe_all`` changed; both empty on a repeated call."""

    withdrawn: tuple[str, ...]  # slugs of the topics withdrawn (or objected to) now
    newly_suppressed: bool

    @property
    def changed(self) -> bool:
        return bool(self.withdrawn) or self.newly_suppressed


def unsubscribe_all(
    session: Session,
    contact: Contact,
    *,
    origin: Origin,
    reason: str | None,
    now: datetime,
    settings: Settings,
) -> Unsubscribed:
    """End every consent of the contact (marketing and tracking) and suppress the address.

    Idempotent: a topic already withdrawn gets no second ledger row, and a repeated call records
    nothing. Takes effect before the next send, because the outbox checks the suppression list
    right before each message goes on the wire.
    """
    lock_contact(session, contact)
    reason = (reason or "").strip()[:MAX_REASON] or None
    withdrawn: list[str] = []
    current = states(session, contact.id)
    for topic_id in sorted(current):
        state = current[topic_id].state
        if state not in _ACTIVE:
            continue
        topic = session.get(Topic, topic_id)
        assert topic is not None
        # The free-text reason stays out of the ledger: the ledger outlives erasure, the event
        # payload does not.
        record(
            session,
            contact_id=contact.id,
            topic=topic,
            action=withdrawal_for(state),
            origin=origin,
            now=now,
            evidence={"scope": "all"},
        )
        withdrawn.append(topic.slug)
    newly_suppressed = suppress(
        session,
        secret=settings.suppression_secret,
        email=contact.email,
        reason=SuppressionReason.UNSUBSCRIBED,
        now=now,
    )
    result = Unsubscribed(withdrawn=tuple(withdrawn), newly_suppressed=newly_suppressed)
    if result.changed:
        record_event(
            session,
            "unsubscribed",
            now=now,
            contact_id=contact.id,
            payload={"source": origin.source, "reason": reason, "topics": withdrawn},
        )
    return result

"""Consent as evidence: topics, the texts people agreed to, the append-only ledger, the current
state derived from it, pending double-opt-in requests, signup forms and the suppression list."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from nurture.db import Base, BigId, UtcDateTime, checked_enum


class TopicKind(enum.StrEnum):
    # What a contact can receive mail about.
    MARKETING = "marketing"
    # Open and click tracking (§25 TDDDG): its own consent, never implied by a topic.
    TRACKING = "tracking"


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[TopicKind] = mapped_column(checked_enum(TopicKind, "topic_kind"))
    # §7(3) UWG: the existing-customer exception covers only the sender's own similar products.
    own_similar_products: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def __repr__(self) -> str:
        return f"<Topic {self.slug}>"


class ConsentText(Base):
    """The exact wording a person saw, immutable; the hash names it in the ledger and exports."""

    __tablename__ = "consent_texts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Action(enum.StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    RECONFIRMED = "reconfirmed"
    IMPORTED = "imported"  # consent that came with a proof reference from another system
    EXISTING_CUSTOMER = "existing_customer"  # §7(3) UWG basis, recorded like consent
    WITHDRAWN = "withdrawn"
    OBJECTED = "objected"  # objection to the existing-customer basis: ends it for good
    EXPIRED = "expired"  # a request nobody confirmed
    ERASED = "erased"


GRANTING = frozenset({Action.CONFIRMED, Action.RECONFIRMED, Action.IMPORTED})


class ConsentEntry(Base):
    """One change of one contact's consent to one topic. Append-only; erasure blanks the
    personal fields (ip, user agent, source details) and keeps the fact and its time."""

    __tablename__ = "consent_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True
    )
    topic_id: Mapped[int] = mapped_column(BigId, ForeignKey("topics.id", ondelete="RESTRICT"))
    action: Mapped[Action] = mapped_column(checked_enum(Action, "consent_action", length=24))
    # To the second, UTC: a date without a time has lost a case (AG Düsseldorf 23 C 3876/13).
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    # "form:<public id>", "api:<token name>", "import:<file>", "user:<id>", "link:<message>", …
    source: Mapped[str] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    text_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("consent_texts.id", ondelete="RESTRICT"), nullable=True
    )
    text_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    # The confirmation mail's Message-ID header, so the proof names the mail that was answered.
    mail_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Imports: {"source", "date", "text_version"}; existing customers: {"sale", "notice"}; …
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_consent_ledger_contact_id_topic_id_at", "contact_id", "topic_id", "at"),
    )


class ConsentState(enum.StrEnum):
    PENDING = "pending"
    GRANTED = "granted"  # confirmed, re-confirmed or imported with proof
    EXISTING_CUSTOMER = "existing_customer"
    NONE = "none"  # never, withdrawn, expired
    OBJECTED = "objected"  # the existing-customer basis is gone for good


class Consent(Base):
    """The current state per contact and topic, kept in step with the ledger in the same
    transaction, so the send gate is one primary-key look-up instead of a ledger scan."""

    __tablename__ = "consents"

    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("topics.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    state: Mapped[ConsentState] = mapped_column(
        checked_enum(ConsentState, "consent_state", length=24)
    )
    # When the current basis was granted or last renewed (dormancy counts from here).
    granted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsentRequest(Base):
    """A double-opt-in request waiting for its confirmation POST."""

    __tablename__ = "consent_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    topic_ids: Mapped[list[int]] = mapped_column(JSON)
    # Only the hash: whoever reads the database cannot confirm in someone's name.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    text_id: Mapped[int] = mapped_column(BigId, ForeignKey("consent_texts.id"))
    source: Mapped[str] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The outbox row of the confirmation mail.
    message_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    repermission: Mapped[bool] = mapped_column(Boolean, default=False)


class SignupForm(Base):
    """A hosted signup page and the embeddable form that posts to it."""

    __tablename__ = "signup_forms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # In the public URL and the embedded form; random, so forms cannot be enumerated.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    topic_ids: Mapped[list[int]] = mapped_column(JSON)
    text_id: Mapped[int] = mapped_column(BigId, ForeignKey("consent_texts.id"))
    ask_tracking: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8), default="de")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    ERASED = "erased"


class Suppression(Base):
    """An address that must never be mailed, kept as HMAC(secret, normalised address) so it
    survives the erasure of the person and blocks re-import and re-signup."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(
        checked_enum(SuppressionReason, "suppression_reason")
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SignupAttempt(Base):
    """Sign-ups per IP (as a keyed hash) and per address, for rate limits against bots."""

    __tablename__ = "signup_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_signup_attempts_key_at", "key", "at"),)


class AppendOnlyLedgerError(RuntimeError):
    """Code tried to change or delete a ledger entry outside erasure."""


@event.listens_for(Session, "before_flush")
def _refuse_ledger_changes(session: Session, _context: Any, _instances: Any) -> None:
    # Erasure blanks personal fields with one bulk UPDATE on purpose; the ORM path only appends.
    for obj in session.dirty:
        if isinstance(obj, ConsentEntry) and session.is_modified(obj):
            raise AppendOnlyLedgerError("the consent ledger is append-only")
    for obj in session.deleted:
        if isinstance(obj, ConsentEntry):
            raise AppendOnlyLedgerError("the consent ledger is append-only")

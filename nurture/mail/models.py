from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nurture.db import Base, BigId, UtcDateTime, checked_enum


class EmailTemplate(Base):
    """A marketer's template; its content lives in immutable versions."""

    __tablename__ = "email_templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    versions: Mapped[list[TemplateVersion]] = relationship(
        back_populates="template", order_by="TemplateVersion.number"
    )


class TemplateVersion(Base):
    """One frozen state of a template. Never updated: editing adds a version."""

    __tablename__ = "email_template_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("email_templates.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    css: Mapped[str] = mapped_column(Text, default="")
    layout: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )

    template: Mapped[EmailTemplate] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("template_id", "number"),)


class MessageState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"


class Purpose(enum.StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"
    TEST = "test"


class Message(Base):
    """One outbox row per thing that must be sent once; its key says what it is."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # e.g. "enrolment:12:step:3" or "optin:request:9": the unique key makes a second
    # enqueue of the same thing a no-op, which is what keeps a step from being sent twice.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    # Opaque and random: the Message-ID's local part, the VERP return path and the reply
    # address all carry it, so bounces and replies map back without exposing ids.
    token: Mapped[str] = mapped_column(String(32), unique=True)
    purpose: Mapped[Purpose] = mapped_column(checked_enum(Purpose, "message_purpose"))
    state: Mapped[MessageState] = mapped_column(checked_enum(MessageState, "message_state"))
    template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_template_versions.id", ondelete="RESTRICT"), nullable=True
    )
    builtin: Mapped[str | None] = mapped_column(String(64), nullable=True)
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True
    )
    topic: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_addr: Mapped[str] = mapped_column(String(320))
    to_name: Mapped[str] = mapped_column(String(200), default="")
    to_domain: Mapped[str] = mapped_column(String(255))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    smtp_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    smtp_response: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    template_version: Mapped[TemplateVersion | None] = relationship()

    __table_args__ = (
        # The claim query: due queued rows in order.
        Index("ix_messages_state_next_attempt_at", "state", "next_attempt_at"),
        # Recovery of rows whose worker died, and the outbox page's filter.
        Index("ix_messages_state_lease_until", "state", "lease_until"),
        # Rate limits count recent sends, globally and per recipient domain.
        Index("ix_messages_sent_at", "sent_at"),
        Index("ix_messages_to_domain_sent_at", "to_domain", "sent_at"),
        # Sent counts per template version (template list, KPIs).
        Index("ix_messages_template_version_id_sent_at", "template_version_id", "sent_at"),
    )


class CapturedMail(Base):
    """A mail the capture transport kept instead of sending (embedded mode, tests)."""

    __tablename__ = "captured_mails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), nullable=True, index=True
    )
    envelope_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    captured_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)

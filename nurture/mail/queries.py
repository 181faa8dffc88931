"""Read-only queries for the mail pages: outbox, captured mails, template versions."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer, joinedload

from nurture.events import Event
from nurture.mail.models import CapturedMail, EmailTemplate, Message, MessageState, TemplateVersion

SEARCH_MAX = 320


def list_messages(
    session: Session,
    *,
    state: MessageState | None = None,
    search: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Message]:
    """Newest messages first, paged by id (keyset), optionally by state and address/key prefix."""
    # Keyset paging (id < last seen) reads one index range per page: OFFSET would walk every
    # skipped row, which at millions of rows makes the last pages the slowest.
    stmt = select(Message).order_by(Message.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Message.state == state)
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    term = (search or "").strip()[:SEARCH_MAX]
    if term:
        # Prefix matches only: "anna@" or "enrolment:12:" find rows without a %term% scan, and
        # autoescape keeps a typed % or _ literal.
        stmt = stmt.where(
            or_(
                func.lower(Message.to_addr).startswith(term.lower(), autoescape=True),
                Message.key.startswith(term, autoescape=True),
            )
        )
    return list(session.scalars(stmt))


def get_message(session: Session, message_id: int) -> Message | None:
    return session.get(Message, message_id)


def message_detail(
    session: Session, message_id: int
) -> tuple[Message, list[Event], CapturedMail | None] | None:
    """A message with its events in order and the newest captured copy, or None."""
    message = session.get(
        Message,
        message_id,
        # The page names the template and version: load them now, not lazily while rendering.
        options=[joinedload(Message.template_version).joinedload(TemplateVersion.template)],
    )
    if message is None:
        return None
    events = list(
        session.scalars(select(Event).where(Event.message_id == message_id).order_by(Event.id))
    )
    captured = session.scalar(
        select(CapturedMail)
        .where(CapturedMail.message_id == message_id)
        .order_by(CapturedMail.id.desc())
        .limit(1)
    )
    return message, events, captured


def list_captured(
    session: Session, *, before_id: int | None = None, limit: int = 50
) -> list[CapturedMail]:
    """Captured mails, newest first, paged by id; the raw bytes are not loaded."""
    stmt = (
        select(CapturedMail)
        .options(defer(CapturedMail.raw))
        .order_by(CapturedMail.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(CapturedMail.id < before_id)
    return list(session.scalars(stmt))


def get_captured(session: Session, captured_id: int) -> CapturedMail | None:
    return session.get(CapturedMail, captured_id)


def get_template(session: Session, template_id: int) -> EmailTemplate | None:
    return session.get(EmailTemplate, template_id)


def list_versions(session: Session, template_id: int) -> list[TemplateVersion]:
    """A template's versions, newest first."""
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.number.desc())
        )
    )


def get_version(session: Session, template_id: int, number: int) -> TemplateVersion | None:
    return session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.template_id == template_id, TemplateVersion.number == number
        )
    )


@dataclass(frozen=True)
class MailParts:
    """A raw message taken apart for display."""

    headers: list[tuple[str, str]]
    text: str | None
    html: str | None


def mail_parts(raw: bytes) -> MailParts:
    """Headers in order and the first text and HTML bodies of a raw RFC 5322 message."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)  # policy.default always builds EmailMessage
    return MailParts(
        headers=[(name, str(value)) for name, value in parsed.items()],
        text=_body(parsed, "plain"),
        html=_body(parsed, "html"),
    )


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        # An unknown charset or broken transfer encoding: show what can be decoded.
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None

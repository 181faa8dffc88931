"""The send gate: checks that must pass before a message is queued and again before it is sent.

The consent rules (nurture/consent/gate.py: consent for the topic, suppression, dormancy,
pause and weekly cap) always run first; later domains add checks of their own (send windows,
throttles) with ``register_gate_check``. The outbox runs them right before a message goes on
the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent import gate as consent_gate
from nurture.events import record_event
from nurture.mail import outbox
from nurture.mail.models import Message

GateCheck = Callable[[Session, Message, datetime, Settings], str | None]
_CHECKS: list[GateCheck] = []


def register_gate_check(check: GateCheck) -> GateCheck:
    """Add a check (usable as a decorator); checks run in registration order."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def gate_checks() -> tuple[GateCheck, ...]:
    return tuple(_CHECKS)


def refusal(session: Session, message: Message, now: datetime, settings: Settings) -> str | None:
    """The first check's refusal reason, or None when the message may go."""
    for check in (consent_gate.check, *_CHECKS):
        reason = check(session, message, now, settings)
        if reason:
            return reason
    return None


@dataclass(frozen=True)
class Refused:
    """The gate said no before anything was queued; ``reason`` as on a cancelled message."""

    reason: str


def enqueue_gated(
    session: Session, settings: Settings, *, now: datetime, **fields: Any
) -> Message | Refused | None:
    """Queue a message only if the gate lets it through now (it runs again before sending).

    How marketing mail enters the outbox: a refusal queues nothing and is recorded as a
    ``send_refused`` event with its reason — once per message key and reason, so a scheduler
    that retries does not flood the log. None, as from ``outbox.enqueue``, when the key was
    queued before.
    """
    probe = Message(
        purpose=fields["purpose"],
        to_addr=fields["to_addr"],
        contact_id=fields.get("contact_id"),
        topic=fields.get("topic"),
        builtin=fields.get("builtin"),
    )
    reason = refusal(session, probe, now, settings)
    if reason:
        key = fields["key"]
        record_event(
            session,
            "send_refused",
            now=now,
            contact_id=fields.get("contact_id"),
            payload={"key": key, "reason": reason, "topic": fields.get("topic")},
            dedup_key=f"refused:{key}:{reason}",
        )
        return Refused(reason)
    return outbox.enqueue(session, now=now, **fields)

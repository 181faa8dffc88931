"""The send gate: checks that must pass before a message is queued and again before it is sent.

Each check is a small function returning a refusal reason or None. The consent domain
registers its checks (consent for the topic, suppression, dormancy, frequency cap) here; the
outbox runs them all right before a message goes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from nurture.mail.models import Message

GateCheck = Callable[[Session, Message, datetime], str | None]
_CHECKS: list[GateCheck] = []


def register_gate_check(check: GateCheck) -> GateCheck:
    """Add a check (usable as a decorator); checks run in registration order."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def gate_checks() -> tuple[GateCheck, ...]:
    return tuple(_CHECKS)


def refusal(session: Session, message: Message, now: datetime) -> str | None:
    """The first check's refusal reason, or None when the message may go."""
    for check in _CHECKS:
        reason = check(session, message, now)
        if reason:
            return reason
    return None

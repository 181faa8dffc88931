"""The send gate: checks that must pass before a message is queued and again before it is sent.

The consent rules (nurture/consent/gate.py: consent for the topic, suppression, dormancy,
pause and weekly cap) always run first; later domains add checks of their own (send windows,
throttles) with ``register_gate_check``. The outbox runs them right before a message goes on
the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent import gate as consent_gate
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

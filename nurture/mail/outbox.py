"""The outbox: one row per message, states that only move forward, exactly-once delivery.

Protocol (each step is its own short transaction, committed by the caller):
  enqueue      insert with a unique key: a second enqueue of the same thing is a no-op
  claim        take a batch of due rows with a lease (SKIP LOCKED on PostgreSQL)
  start        queued → sending for ONE row, right before it goes on the wire
  record       sending → sent | queued (retry) | failed
  recover      sending past its lease → uncertain (its worker died mid-send: maybe delivered,
               so never re-sent automatically); claimed-but-queued rows simply become due again
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.db import claim
from nurture.events import append_events, record_event
from nurture.mail.identity import new_token
from nurture.mail.models import Message, MessageState, Purpose
from nurture.mail.transports import BounceKind, Outcome, SendResult

S = MessageState
TRANSITIONS: dict[MessageState, frozenset[MessageState]] = {
    S.QUEUED: frozenset({S.SENDING, S.CANCELLED, S.FAILED}),
    S.SENDING: frozenset({S.SENT, S.QUEUED, S.FAILED, S.UNCERTAIN}),
    # Only a person moves an uncertain row on: resend it or drop it.
    S.UNCERTAIN: frozenset({S.QUEUED, S.CANCELLED}),
    S.SENT: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
MAX_BACKOFF = timedelta(hours=6)


class IllegalTransition(RuntimeError):
    """A state change the outbox protocol does not allow."""


_FILTERS = {
    "message_id": lambda t: t.c.id == bindparam("f_message_id"),
    "worker_id": lambda t: t.c.claimed_by == bindparam("f_worker_id"),
    "lease_before": lambda t: t.c.lease_until < bindparam("f_lease_before"),
    "expires_before": lambda t: t.c.expires_at < bindparam("f_expires_before"),
}


@lru_cache(maxsize=64)
def _statement(
    sources: tuple[MessageState, ...],
    target: MessageState,
    filters: tuple[str, ...],
    columns: tuple[str, ...],
) -> Any:
    # Built once per shape and reused with bound values: constructing and cache-keying a new
    # UPDATE on every call cost more than running it (this runs twice per sent message).
    table = Message.__table__
    return (
        update(table)
        .where(*(_FILTERS[name](table) for name in filters), table.c.state.in_(sources))
        .values(state=target, **{c: bindparam(f"v_{c}") for c in columns})
        .returning(table.c.id, table.c.contact_id)
    )


def transition(
    session: Session,
    sources: Iterable[MessageState],
    target: MessageState,
    *,
    now: datetime,
    where: dict[str, Any],
    **values: Any,
) -> list[tuple[int, int | None]]:
    """Move the rows matching ``where`` from one of ``sources`` to ``target``, atomically.

    The only place a message's state changes. ``where`` names filters (message_id, worker_id,
    lease_before, expires_before). Returns (id, contact_id) of the rows that moved; a row
    another worker already moved is simply not among them.
    """
    sources = tuple(sources)
    for source in sources:
        if target not in TRANSITIONS[source]:
            raise IllegalTransition(f"{source.value} → {target.value} is not allowed")
    values["updated_at"] = now
    filters = tuple(sorted(where))
    columns = tuple(sorted(values))
    params = {f"f_{k}": v for k, v in where.items()} | {f"v_{k}": v for k, v in values.items()}
    result = session.connection().execute(_statement(sources, target, filters, columns), params)
    return [(row[0], row[1]) for row in result]


def _events(
    session: Session,
    rows: list[tuple[int, int | None]],
    type: str,
    *,
    now: datetime,
    payload: dict[str, Any] | None = None,
) -> None:
    if rows:
        events = [
            {"type": type, "message_id": mid, "contact_id": cid, "payload": payload or {}}
            for mid, cid in rows
        ]
        append_events(session, events, now=now)


def enqueue(
    session: Session,
    *,
    key: str,
    purpose: Purpose,
    to_addr: str,
    context: dict[str, Any],
    now: datetime,
    to_name: str = "",
    template_version_id: int | None = None,
    builtin: str | None = None,
    contact_id: int | None = None,
    topic: str | None = None,
    not_before: datetime | None = None,
    lateness: timedelta | None = None,
) -> Message | None:
    """Queue a message once per ``key``; None when that key was queued before."""
    if (template_version_id is None) == (builtin is None):
        raise ValueError("a message needs exactly one of template_version_id or builtin")
    slot = not_before or now
    values = {
        "key": key,
        "token": new_token(),
        "purpose": purpose,
        "state": MessageState.QUEUED,
        "template_version_id": template_version_id,
        "builtin": builtin,
        "contact_id": contact_id,
        "topic": topic,
        "to_addr": to_addr,
        "to_name": to_name,
        "to_domain": to_addr.rsplit("@", 1)[-1].lower(),
        "context": context,
        "not_before": slot,
        "expires_at": slot + lateness if lateness is not None else None,
        "next_attempt_at": slot,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    new_id = session.scalar(
        insert(Message)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(Message.id)
    )
    if new_id is None:
        return None
    record_event(
        session, "queued", now=now, message_id=new_id, contact_id=contact_id, payload={"key": key}
    )
    return session.get(Message, new_id)


def recover_expired(session: Session, *, now: datetime) -> int:
    """Rows left in ``sending`` by a dead worker become ``uncertain``; returns how many."""
    rows = transition(
        session,
        [S.SENDING],
        S.UNCERTAIN,
        now=now,
        where={"lease_before": now},
        reason="worker_lost",
        lease_until=None,
    )
    _events(session, rows, "send_uncertain", now=now, payload={"reason": "worker_lost"})
    return len(rows)


def cancel_late(session: Session, *, now: datetime) -> int:
    """Skip queued rows past their lateness limit instead of blasting them out late."""
    rows = transition(
        session,
        [S.QUEUED],
        S.CANCELLED,
        now=now,
        where={"expires_before": now},
        reason="too_late",
        lease_until=None,
    )
    _events(session, rows, "send_skipped", now=now, payload={"reason": "too_late"})
    return len(rows)


def capacity(session: Session, settings: Settings, *, now: datetime) -> int | None:
    """How many more sends the global rate limits allow now (None: unlimited)."""
    limits = [
        (settings.smtp_rate_per_minute, timedelta(minutes=1)),
        (settings.smtp_rate_per_hour, timedelta(hours=1)),
    ]
    left: int | None = None
    for limit, window in limits:
        if limit <= 0:
            continue
        # Counted from the table, so the limit holds across every worker.
        sent = (
            session.scalar(
                select(func.count()).select_from(Message).where(Message.sent_at > now - window)
            )
            or 0
        )
        remaining = max(0, limit - sent)
        left = remaining if left is None else min(left, remaining)
    return left


def domain_has_room(session: Session, settings: Settings, domain: str, *, now: datetime) -> bool:
    """Whether the per-recipient-domain limit allows one more send now.

    Rows in flight count too (their result may not be committed yet). Two lanes checking at
    the same instant can still both pass, so the limit may be exceeded by at most one per
    additional SMTP connection; receivers' limits are coarse enough for that.
    """
    limit = settings.smtp_domain_rate_per_minute
    if limit <= 0:
        return True
    recent = or_(
        Message.sent_at > now - timedelta(minutes=1), Message.state == MessageState.SENDING
    )
    sent = (
        session.scalar(
            select(func.count()).select_from(Message).where(Message.to_domain == domain, recent)
        )
        or 0
    )
    return sent < limit


def claim_batch(
    session: Session, *, worker_id: str, now: datetime, limit: int, lease: timedelta
) -> list[int]:
    """Lease up to ``limit`` due rows to this worker. The caller commits at once."""
    return claim(
        session,
        Message,
        where=[
            Message.state == S.QUEUED,
            Message.next_attempt_at <= now,
            or_(Message.lease_until.is_(None), Message.lease_until < now),
        ],
        values={"lease_until": now + lease, "claimed_by": worker_id},
        limit=limit,
        order_by=[Message.next_attempt_at, Message.id],
    )


def _mine(message_id: int, worker_id: str) -> dict[str, Any]:
    return {"message_id": message_id, "worker_id": worker_id}


def start_sending(
    session: Session, message_id: int, *, worker_id: str, now: datetime, lease: timedelta
) -> bool:
    """Mark one claimed row as in flight; False if this worker lost it meanwhile."""
    rows = transition(
        session,
        [S.QUEUED],
        S.SENDING,
        now=now,
        where=_mine(message_id, worker_id),
        lease_until=now + lease,
    )
    return bool(rows)


def skip_claimed(
    session: Session, message_id: int, *, worker_id: str, reason: str, now: datetime
) -> bool:
    """Cancel a claimed row that the send gate refused, with the reason as an event."""
    rows = transition(
        session,
        [S.QUEUED],
        S.CANCELLED,
        now=now,
        where=_mine(message_id, worker_id),
        reason=reason,
        lease_until=None,
    )
    _events(session, rows, "send_skipped", now=now, payload={"reason": reason})
    return bool(rows)


def postpone(session: Session, message_id: int, *, worker_id: str, until: datetime) -> None:
    """Give a claimed row back to the queue for later (a throttle, not a failure)."""
    session.execute(
        update(Message)
        .where(Message.id == message_id, Message.claimed_by == worker_id, Message.state == S.QUEUED)
        .values(next_attempt_at=until, lease_until=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )


def backoff(attempts: int) -> timedelta:
    """1, 2, 4 … minutes, capped at 6 hours, with jitter so retries do not march in step."""
    base = min(timedelta(minutes=2 ** max(0, attempts - 1)), MAX_BACKOFF)
    return base * (1 + random.random() * 0.1)


def record_result(
    session: Session,
    message: Message,
    result: SendResult,
    *,
    now: datetime,
    subject: str | None,
    max_attempts: int,
) -> MessageState:
    """Record what the transport said; returns the row's new state."""
    mine = {"message_id": message.id}
    smtp = {"smtp_code": result.code, "smtp_response": result.text[:2000]}
    payload = {"code": result.code, "enhanced": result.enhanced, "text": result.text[:500]}
    if result.outcome == Outcome.SENT:
        rows = transition(
            session,
            [S.SENDING],
            S.SENT,
            now=now,
            where=mine,
            sent_at=now,
            subject=subject,
            lease_until=None,
            **smtp,
        )
        _events(session, rows, "sent", now=now, payload={"code": result.code})
        return S.SENT
    attempts = message.attempts + 1
    if result.outcome == Outcome.RETRY and attempts < max_attempts:
        rows = transition(
            session,
            [S.SENDING],
            S.QUEUED,
            now=now,
            where=mine,
            attempts=attempts,
            next_attempt_at=now + backoff(attempts),
            lease_until=None,
            claimed_by=None,
            reason="retry",
            **smtp,
        )
        _events(session, rows, "send_deferred", now=now, payload=payload | {"attempt": attempts})
        return S.QUEUED
    reason = "max_attempts" if result.outcome == Outcome.RETRY else "rejected"
    if result.bounce == BounceKind.HARD and result.outcome == Outcome.FAILED:
        reason = "hard_bounce"
    rows = transition(
        session,
        [S.SENDING],
        S.FAILED,
        now=now,
        where=mine,
        attempts=attempts,
        reason=reason,
        subject=subject,
        lease_until=None,
        **smtp,
    )
    _events(session, rows, "send_failed", now=now, payload=payload | {"reason": reason})
    if reason == "hard_bounce":
        # A synchronous 5.1.1 is a bounce like any DSN: the suppression logic listens for it.
        _events(
            session,
            rows,
            "bounced",
            now=now,
            payload=payload | {"kind": BounceKind.HARD.value, "sync": True},
        )
    return S.FAILED


def fail_unbuildable(session: Session, message: Message, *, error: str, now: datetime) -> None:
    """A message that cannot be rendered or built fails with the reason kept."""
    rows = transition(
        session,
        [S.SENDING],
        S.FAILED,
        now=now,
        where={"message_id": message.id},
        reason="render_error",
        smtp_response=error[:2000],
        lease_until=None,
    )
    _events(
        session,
        rows,
        "send_failed",
        now=now,
        payload={"reason": "render_error", "error": error[:500]},
    )


def resend_uncertain(session: Session, message_id: int, *, now: datetime, by: str) -> bool:
    """A person decided an uncertain message was not delivered: queue it again."""
    rows = transition(
        session,
        [S.UNCERTAIN],
        S.QUEUED,
        now=now,
        where={"message_id": message_id},
        next_attempt_at=now,
        lease_until=None,
        claimed_by=None,
        reason="resend",
        expires_at=None,
    )
    _events(session, rows, "resend_requested", now=now, payload={"by": by})
    return bool(rows)


def drop_uncertain(session: Session, message_id: int, *, now: datetime, by: str) -> bool:
    """A person decided an uncertain message was delivered (or should not be): drop it."""
    rows = transition(
        session,
        [S.UNCERTAIN],
        S.CANCELLED,
        now=now,
        where={"message_id": message_id},
        reason="dropped",
    )
    _events(session, rows, "send_dropped", now=now, payload={"by": by})
    return bool(rows)


def counts_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Message.state, func.count()).group_by(Message.state))
    return {state.value: count for state, count in rows}

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.events import Event
from nurture.mail import outbox
from nurture.mail.models import Message, MessageState, Purpose
from nurture.mail.transports import BounceKind, Outcome, SendResult
from tests.factories import make_contact

LEASE = timedelta(minutes=5)


def _enqueue(session: Session, clock: FrozenClock, key: str, **kwargs) -> Message | None:  # type: ignore[no-untyped-def]
    return outbox.enqueue(
        session,
        key=key,
        purpose=Purpose.MARKETING,
        to_addr=f"{key}@kunde.example",
        context={"contact": {"first_name": "Anna"}},
        builtin="optin_confirmation",
        now=clock.now(),
        **kwargs,
    )


def _events(session: Session, type: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.type == type).order_by(Event.id)))


def _claim_and_start(session: Session, clock: FrozenClock, worker: str = "w1") -> Message:
    ids = outbox.claim_batch(session, worker_id=worker, now=clock.now(), limit=1, lease=LEASE)
    assert len(ids) == 1
    assert outbox.start_sending(session, ids[0], worker_id=worker, now=clock.now(), lease=LEASE)
    session.commit()
    message = session.get(Message, ids[0], populate_existing=True)
    assert message is not None
    return message


def test_the_same_key_is_queued_once(session: Session, clock: FrozenClock) -> None:
    first = _enqueue(session, clock, "enrolment-1-step-1")
    second = _enqueue(session, clock, "enrolment-1-step-1")
    session.commit()
    assert first is not None and second is None
    assert len(session.scalars(select(Message)).all()) == 1
    assert first.state == MessageState.QUEUED
    assert first.to_domain == "kunde.example"
    assert len(first.token) == 32
    assert [e.payload["key"] for e in _events(session, "queued")] == ["enrolment-1-step-1"]


def test_claims_take_due_rows_once_and_leases_expire(session: Session, clock) -> None:
    for i in range(5):
        _enqueue(session, clock, f"k{i}")
    _enqueue(session, clock, "later", not_before=clock.now() + timedelta(hours=1))
    session.commit()
    first = outbox.claim_batch(session, worker_id="w1", now=clock.now(), limit=3, lease=LEASE)
    second = outbox.claim_batch(session, worker_id="w2", now=clock.now(), limit=10, lease=LEASE)
    session.commit()
    assert len(first) == 3 and len(second) == 2
    assert not set(first) & set(second)
    # w1 dies holding its claims: after the lease they are due again, for anyone.
    clock.advance(LEASE + timedelta(seconds=1))
    again = outbox.claim_batch(session, worker_id="w3", now=clock.now(), limit=10, lease=LEASE)
    assert set(again) == set(first) | set(second)


def test_a_worker_that_lost_its_lease_cannot_start_sending(session: Session, clock) -> None:
    _enqueue(session, clock, "k")
    session.commit()
    [mid] = outbox.claim_batch(session, worker_id="slow", now=clock.now(), limit=1, lease=LEASE)
    clock.advance(LEASE + timedelta(seconds=1))
    [taken] = outbox.claim_batch(session, worker_id="fast", now=clock.now(), limit=1, lease=LEASE)
    assert taken == mid
    assert not outbox.start_sending(session, mid, worker_id="slow", now=clock.now(), lease=LEASE)
    assert outbox.start_sending(session, mid, worker_id="fast", now=clock.now(), lease=LEASE)


def test_rows_left_sending_become_uncertain_and_are_never_resent(session: Session, clock) -> None:
    _enqueue(session, clock, "k")
    session.commit()
    message = _claim_and_start(session, clock)
    clock.advance(LEASE - timedelta(seconds=1))
    assert outbox.recover_expired(session, now=clock.now()) == 0
    clock.advance(seconds=2)
    assert outbox.recover_expired(session, now=clock.now()) == 1
    session.commit()
    session.refresh(message)
    assert message.state == MessageState.UNCERTAIN
    assert outbox.claim_batch(session, worker_id="w2", now=clock.now(), limit=10, lease=LEASE) == []
    assert _events(session, "send_uncertain")[0].message_id == message.id


def test_a_person_resends_or_drops_an_uncertain_message(session: Session, clock) -> None:
    _enqueue(session, clock, "a")
    _enqueue(session, clock, "b")
    session.commit()
    a = _claim_and_start(session, clock)
    b = _claim_and_start(session, clock)
    clock.advance(LEASE * 2)
    outbox.recover_expired(session, now=clock.now())
    assert outbox.resend_uncertain(session, a.id, now=clock.now(), by="admin@x")
    assert outbox.drop_uncertain(session, b.id, now=clock.now(), by="admin@x")
    session.commit()
    assert outbox.claim_batch(session, worker_id="w", now=clock.now(), limit=10, lease=LEASE) == [
        a.id
    ]
    session.refresh(b)
    assert (b.state, b.reason) == (MessageState.CANCELLED, "dropped")
    # Only uncertain rows can be resent by hand.
    assert not outbox.resend_uncertain(session, b.id, now=clock.now(), by="admin@x")


def test_late_messages_are_skipped_not_blasted(session: Session, clock: FrozenClock) -> None:
    _enqueue(session, clock, "on-time", lateness=timedelta(hours=24))
    _enqueue(session, clock, "no-limit")
    session.commit()
    clock.advance(hours=24, seconds=1)
    assert outbox.cancel_late(session, now=clock.now()) == 1
    session.commit()
    late = session.scalars(select(Message).where(Message.key == "on-time")).one()
    assert (late.state, late.reason) == (MessageState.CANCELLED, "too_late")
    assert _events(session, "send_skipped")[0].payload == {"reason": "too_late"}


def test_sent_result_is_recorded_with_an_event(session: Session, clock) -> None:
    _enqueue(session, clock, "k")
    message = _claim_and_start(session, clock)
    state = outbox.record_result(
        session,
        message,
        SendResult(Outcome.SENT, 250, "ok"),
        now=clock.now(),
        subject="Hallo",
        max_attempts=3,
    )
    session.commit()
    session.refresh(message)
    assert state == MessageState.SENT
    assert (message.sent_at, message.subject, message.smtp_code) == (clock.now(), "Hallo", 250)
    assert [e.message_id for e in _events(session, "sent")] == [message.id]


def test_temporary_failures_retry_with_backoff_then_fail(session: Session, clock) -> None:
    _enqueue(session, clock, "k")
    session.commit()
    deferred = SendResult(Outcome.RETRY, 451, "4.3.0 try later")
    for attempt in (1, 2):
        message = _claim_and_start(session, clock)
        state = outbox.record_result(
            session, message, deferred, now=clock.now(), subject=None, max_attempts=3
        )
        session.commit()
        session.refresh(message)
        assert (state, message.attempts) == (MessageState.QUEUED, attempt)
        wait = message.next_attempt_at - clock.now()
        assert (
            timedelta(minutes=2 ** (attempt - 1))
            <= wait
            <= timedelta(minutes=2 ** (attempt - 1) * 1.1)
        )
        clock.set(message.next_attempt_at)
    message = _claim_and_start(session, clock)
    state = outbox.record_result(
        session, message, deferred, now=clock.now(), subject=None, max_attempts=3
    )
    session.commit()
    session.refresh(message)
    assert (state, message.reason, message.smtp_code) == (MessageState.FAILED, "max_attempts", 451)


def test_synchronous_user_unknown_is_a_hard_bounce_event(session: Session, clock) -> None:
    contact = make_contact(session, clock)
    _enqueue(session, clock, "k", contact_id=contact.id)
    message = _claim_and_start(session, clock)
    result = SendResult(Outcome.FAILED, 550, "5.1.1 user unknown", "5.1.1", BounceKind.HARD)
    outbox.record_result(session, message, result, now=clock.now(), subject=None, max_attempts=3)
    session.commit()
    session.refresh(message)
    assert (message.state, message.reason) == (MessageState.FAILED, "hard_bounce")
    bounce = _events(session, "bounced")[0]
    assert bounce.contact_id == contact.id
    assert bounce.payload["kind"] == "hard" and bounce.payload["sync"] is True


def test_policy_rejections_fail_without_blaming_the_recipient(session: Session, clock) -> None:
    _enqueue(session, clock, "k")
    message = _claim_and_start(session, clock)
    result = SendResult(Outcome.FAILED, 550, "5.7.1 spam", "5.7.1", BounceKind.POLICY)
    outbox.record_result(session, message, result, now=clock.now(), subject=None, max_attempts=3)
    session.commit()
    session.refresh(message)
    assert (message.state, message.reason) == (MessageState.FAILED, "rejected")
    assert _events(session, "bounced") == []


def test_illegal_transitions_are_refused(session: Session, clock: FrozenClock) -> None:
    with pytest.raises(outbox.IllegalTransition, match="sent → queued is not allowed"):
        outbox.transition(
            session,
            [MessageState.SENT],
            MessageState.QUEUED,
            now=clock.now(),
            where={"message_id": 1},
        )


def test_rate_limit_capacity_counts_recent_sends(app, session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings.with_overrides(
        smtp_rate_per_minute=3, smtp_rate_per_hour=4
    )
    assert outbox.capacity(session, settings, now=clock.now()) == 3
    for i in range(2):
        _enqueue(session, clock, f"k{i}")
        message = _claim_and_start(session, clock)
        outbox.record_result(
            session,
            message,
            SendResult(Outcome.SENT, 250, "ok"),
            now=clock.now(),
            subject=None,
            max_attempts=3,
        )
    session.commit()
    assert outbox.capacity(session, settings, now=clock.now()) == 1
    clock.advance(minutes=2)
    assert outbox.capacity(session, settings, now=clock.now()) == 2  # the hour still counts 2
    unlimited = settings.with_overrides(smtp_rate_per_minute=0, smtp_rate_per_hour=0)
    assert outbox.capacity(session, unlimited, now=clock.now()) is None

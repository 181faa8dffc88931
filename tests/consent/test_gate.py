"""The send gate: the pure policy, exhaustively, and the query against a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from nurture.consent import gate
from nurture.consent.gate import GateFacts, decide, months_before
from nurture.consent.ledger import Origin, record
from nurture.consent.models import Action, ConsentState, SuppressionReason, Topic, TopicKind
from nurture.consent.suppression import suppress
from nurture.events import record_event
from nurture.mail import outbox
from nurture.mail.gate import refusal
from nurture.mail.models import Purpose
from tests.factories import grant_consent, make_contact, make_topic

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NEWS = Topic(slug="news", name="News", kind=TopicKind.MARKETING, own_similar_products=False)
OWN = Topic(slug="spare-parts", name="Parts", kind=TopicKind.MARKETING, own_similar_products=True)
TRACKING = Topic(slug="tracking", name="Tracking", kind=TopicKind.TRACKING)


def facts(**changes: object) -> GateFacts:
    base: dict[str, object] = {
        "purpose": Purpose.MARKETING,
        "suppressed": False,
        "topic": NEWS,
        "state": ConsentState.GRANTED,
        "granted_at": NOW - timedelta(days=30),
    }
    return GateFacts(**(base | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"suppressed": True}, "suppressed"),
        ({"has_contact": False}, "no_contact"),
        ({"topic": None}, "no_topic"),
        ({"topic": TRACKING}, "no_topic"),
        ({"state": None, "granted_at": None}, "no_consent"),
        ({"state": ConsentState.PENDING}, "no_consent"),
        ({"state": ConsentState.NONE}, "no_consent"),
        ({"state": ConsentState.OBJECTED}, "no_consent"),
        # The existing-customer exception covers only the sender's own similar products.
        ({"state": ConsentState.EXISTING_CUSTOMER}, "no_consent"),
        ({"state": ConsentState.EXISTING_CUSTOMER, "topic": OWN}, None),
        ({"granted_at": NOW - timedelta(days=800)}, "consent_dormant"),
        # A sign of life within the limit keeps an old consent alive.
        (
            {"granted_at": NOW - timedelta(days=800), "last_sign_of_life": NOW - timedelta(days=9)},
            None,
        ),
        ({"paused_until": NOW + timedelta(days=1)}, "paused"),
        ({"paused_until": NOW - timedelta(days=1)}, None),
        ({"max_per_week": 1, "sent_last_week": 1}, "frequency_cap"),
        ({"max_per_week": 2, "sent_last_week": 1}, None),
        # Transactional mail passes without consent; only suppression stops it.
        ({"purpose": Purpose.TRANSACTIONAL, "state": None, "topic": None}, None),
        ({"purpose": Purpose.TRANSACTIONAL, "suppressed": True}, "suppressed"),
        ({"purpose": Purpose.TEST, "suppressed": True, "state": None}, None),
        # A re-permission mail needs some consent still valid when it goes out.
        ({"purpose": Purpose.TRANSACTIONAL, "still_granted": True}, None),
        ({"purpose": Purpose.TRANSACTIONAL, "still_granted": False}, "no_consent"),
    ],
)
def test_policy(changes: dict[str, object], reason: str | None) -> None:
    assert decide(facts(**changes), now=NOW, dormancy_months=24) == reason


def test_dormancy_counts_calendar_months() -> None:
    assert months_before(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert months_before(NOW, 24) == datetime(2024, 11, 23, 12, 0, tzinfo=UTC)
    edge = facts(granted_at=months_before(NOW, 24))
    assert decide(edge, now=NOW, dormancy_months=24) is None
    older = facts(granted_at=months_before(NOW, 24) - timedelta(seconds=1))
    assert decide(older, now=NOW, dormancy_months=24) == "consent_dormant"


def _marketing(session: Session, clock, contact_id: int | None, topic: str | None = "news"):  # type: ignore[no-untyped-def]
    message = outbox.enqueue(
        session,
        key=f"m:{contact_id}:{topic}",
        purpose=Purpose.MARKETING,
        to_addr="anna@kunde.example",
        context={},
        builtin="optin_confirmation",
        contact_id=contact_id,
        topic=topic,
        now=clock.now(),
    )
    assert message is not None
    return message


def test_the_gate_reads_consent_suppression_and_life_from_the_database(
    app, session: Session, clock
) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings
    contact = make_contact(session, clock, email="anna@kunde.example")
    message = _marketing(session, clock, contact.id)
    assert refusal(session, message, clock.now(), settings) == "no_topic"
    make_topic(session, clock, "news")
    assert refusal(session, message, clock.now(), settings) == "no_consent"
    grant_consent(session, clock, contact, "news")
    assert refusal(session, message, clock.now(), settings) is None

    clock.advance(timedelta(days=800))
    assert refusal(session, message, clock.now(), settings) == "consent_dormant"
    record_event(session, "clicked", now=clock.now(), contact_id=contact.id)
    assert refusal(session, message, clock.now(), settings) is None

    suppress(
        session,
        secret=settings.suppression_secret,
        email="ANNA@kunde.example",
        reason=SuppressionReason.UNSUBSCRIBED,
        now=clock.now(),
    )
    assert refusal(session, message, clock.now(), settings) == "suppressed"
    assert _marketing(session, clock, None, None) is not None
    assert gate.check(session, _marketing(session, clock, None, "x"), clock.now(), settings) == (
        "suppressed"
    )


def test_weekly_cap_counts_sent_marketing_mail(app, session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings
    contact = make_contact(session, clock, email="bert@kunde.example")
    grant_consent(session, clock, contact, "news")
    contact.max_mails_per_week = 1
    first = _marketing(session, clock, contact.id)
    assert refusal(session, first, clock.now(), settings) is None
    from nurture.mail.models import MessageState

    first.state = MessageState.SENT
    first.sent_at = clock.now()
    session.flush()
    second = _marketing(session, clock, contact.id, "news2")
    second.topic = "news"
    assert refusal(session, second, clock.now(), settings) == "frequency_cap"
    clock.advance(timedelta(days=8))
    assert refusal(session, second, clock.now(), settings) is None


def test_ledger_moves_state_and_refuses_the_existing_customer_basis_after_an_objection(
    session: Session, clock
) -> None:  # type: ignore[no-untyped-def]
    from nurture.consent.ledger import ConsentError, history, states

    contact = make_contact(session, clock)
    topic = make_topic(session, clock, "spare-parts", own_similar_products=True)
    origin = Origin(source="test")

    def step(action: Action) -> ConsentState:
        record(
            session,
            contact_id=contact.id,
            topic=topic,
            action=action,
            origin=origin,
            now=clock.now(),
        )
        return states(session, contact.id)[topic.id].state

    assert step(Action.REQUESTED) is ConsentState.PENDING
    assert step(Action.CONFIRMED) is ConsentState.GRANTED
    assert step(Action.REQUESTED) is ConsentState.GRANTED  # a new request never lowers it
    assert step(Action.WITHDRAWN) is ConsentState.NONE
    assert step(Action.EXISTING_CUSTOMER) is ConsentState.EXISTING_CUSTOMER
    assert step(Action.OBJECTED) is ConsentState.OBJECTED
    with pytest.raises(ConsentError, match="objected"):
        step(Action.EXISTING_CUSTOMER)
    assert [e.action for e in history(session, contact.id)] == [
        Action.REQUESTED,
        Action.CONFIRMED,
        Action.REQUESTED,
        Action.WITHDRAWN,
        Action.EXISTING_CUSTOMER,
        Action.OBJECTED,
    ]


def test_the_ledger_is_append_only(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    from nurture.consent.ledger import history
    from nurture.consent.models import AppendOnlyLedgerError

    contact = make_contact(session, clock)
    grant_consent(session, clock, contact, "news")
    session.commit()
    contact_id = contact.id
    entry = history(session, contact_id)[0]
    entry.ip = "203.0.113.9"
    with pytest.raises(AppendOnlyLedgerError):
        session.flush()
    session.rollback()
    session.delete(history(session, contact_id)[0])
    with pytest.raises(AppendOnlyLedgerError):
        session.flush()
    session.rollback()
    assert [e.ip for e in history(session, contact_id)] == ["192.0.2.1"]


def test_a_repermission_mail_stops_when_the_last_consent_was_withdrawn(
    app, session: Session, clock
) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings
    contact = make_contact(session, clock, email="cleo@kunde.example")
    topic = grant_consent(session, clock, contact, "news")
    message = outbox.enqueue(
        session,
        key="repermission:1",
        purpose=Purpose.TRANSACTIONAL,
        to_addr=contact.email,
        context={},
        builtin="repermission",
        contact_id=contact.id,
        now=clock.now(),
    )
    assert message is not None
    assert refusal(session, message, clock.now(), settings) is None
    record(
        session,
        contact_id=contact.id,
        topic=topic,
        action=Action.WITHDRAWN,
        origin=Origin(source="test"),
        now=clock.now(),
    )
    assert refusal(session, message, clock.now(), settings) == "no_consent"


def test_marketing_mail_is_queued_only_through_the_gate(app, session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from nurture.events import Event
    from nurture.mail.gate import Refused, enqueue_gated
    from nurture.mail.models import Message

    settings = app.extensions["nurture"].settings
    contact = make_contact(session, clock, email="dora@kunde.example")
    make_topic(session, clock, "news")
    fields = {
        "key": "sequence:1:step:1",
        "purpose": Purpose.MARKETING,
        "to_addr": contact.email,
        "context": {},
        "builtin": "optin_confirmation",
        "contact_id": contact.id,
        "topic": "news",
    }
    for _ in range(2):  # a retrying scheduler records the refusal once
        assert enqueue_gated(session, settings, now=clock.now(), **fields) == Refused("no_consent")
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    refusals = session.scalars(select(Event).where(Event.type == "send_refused")).all()
    assert [(e.contact_id, e.payload["reason"], e.payload["key"]) for e in refusals] == [
        (contact.id, "no_consent", "sequence:1:step:1")
    ]

    grant_consent(session, clock, contact, "news")
    queued = enqueue_gated(session, settings, now=clock.now(), **fields)
    assert isinstance(queued, Message) and queued.key == "sequence:1:step:1"
    assert enqueue_gated(session, settings, now=clock.now(), **fields) is None  # once per key

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts.activity import timeline
from nurture.events import AppendOnlyError, Event, record_event
from tests.factories import make_contact


def test_record_event_appends_a_row(session: Session, clock: FrozenClock) -> None:
    contact = make_contact(session, clock)
    event = record_event(
        session, "order", now=clock.now(), contact_id=contact.id, payload={"amount": "19.90"}
    )
    session.commit()
    assert event is not None
    stored = session.get(Event, event.id)
    assert stored is not None
    assert (stored.type, stored.contact_id, stored.payload) == (
        "order",
        contact.id,
        {"amount": "19.90"},
    )
    assert stored.occurred_at == clock.now()


def test_same_dedup_key_is_recorded_once(session: Session, clock: FrozenClock) -> None:
    cid = make_contact(session, clock).id
    first = record_event(session, "opened", now=clock.now(), contact_id=cid, dedup_key="open:abc")
    clock.advance(minutes=5)
    second = record_event(session, "opened", now=clock.now(), contact_id=cid, dedup_key="open:abc")
    session.commit()
    assert first is not None
    assert second is None
    assert (
        session.scalar(select(func.count()).select_from(Event).where(Event.type == "opened")) == 1
    )


def test_events_cannot_be_changed_or_deleted(session: Session, clock: FrozenClock) -> None:
    event = record_event(
        session, "order", now=clock.now(), contact_id=make_contact(session, clock).id
    )
    session.commit()
    assert event is not None
    event.type = "cancellation"
    with pytest.raises(AppendOnlyError):
        session.flush()
    session.rollback()
    session.delete(session.get(Event, event.id))
    with pytest.raises(AppendOnlyError):
        session.flush()


def test_timeline_lists_a_contacts_events_newest_first(
    session: Session, clock: FrozenClock
) -> None:
    anna, ben = make_contact(session, clock), make_contact(session, clock)
    clock.advance(minutes=1)
    record_event(session, "sent", now=clock.now(), contact_id=anna.id)
    clock.advance(hours=1)
    record_event(session, "opened", now=clock.now(), contact_id=anna.id)
    record_event(session, "order", now=clock.now(), contact_id=ben.id)
    session.commit()
    assert [e.type for e in timeline(session, anna.id)] == ["opened", "sent", "contact_created"]

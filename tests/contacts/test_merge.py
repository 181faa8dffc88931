from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts.activity import record_activities, timeline
from nurture.contacts.custom_fields import create_field
from nurture.contacts.duplicates import dismiss
from nurture.contacts.merge import (
    MergeError,
    merge_contacts,
    register_merge_hook,
    unregister_merge_hook,
)
from nurture.contacts.models import Contact, DuplicateDismissal, Lifecycle
from nurture.events import Event, record_event
from nurture.mail import outbox
from nurture.mail.models import Message, Purpose
from tests.factories import make_contact, make_user


def _order(contact: Contact, order_id: str, amount: str) -> dict[str, Any]:
    return {
        "type": "order",
        "id": order_id,
        "contact_id": contact.id,
        "amount": amount,
        "currency": "EUR",
    }


def _message(session: Session, clock: FrozenClock, contact: Contact) -> Message:
    message = outbox.enqueue(
        session,
        key=f"test:{contact.id}",
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        context={},
        builtin="optin_confirmation",
        contact_id=contact.id,
        now=clock.now(),
    )
    assert message is not None
    return message


@pytest.fixture
def marketer(session: Session, clock: FrozenClock) -> User:
    return make_user(session, clock, role=Role.MARKETER, email="merger@nurture.example")


def test_merging_keeps_both_histories_on_the_kept_contact(
    session: Session, clock: FrozenClock, marketer: User
) -> None:
    keep = make_contact(
        session, clock, email="anna@firma.example", first_name="Anna", last_name="Müller",
        company="Muster GmbH", tags=["kunde"],
    )  # fmt: skip
    merge = make_contact(
        session, clock, email="a.mueller@web.example", first_name="Anna", last_name="Mueller",
        phone="+49 221 123456", tags=["newsletter", "kunde"],
    )  # fmt: skip
    record_activities(session, [_order(keep, "A-1", "10")], now=clock.now(), source="erp")
    clock.advance(timedelta(days=1))
    record_activities(
        session,
        [_order(merge, "B-1", "20"), {"type": "note", "contact_id": merge.id, "text": "Rückruf"}],
        now=clock.now(),
        source="erp",
    )
    record_event(session, "mail_opened", now=clock.now(), contact_id=merge.id)
    keep_message, merge_message = _message(session, clock, keep), _message(session, clock, merge)
    session.commit()
    merged_id, keep_id = merge.id, keep.id
    # Loaded in the session before the merge: it must not show the old contact afterwards.
    loaded = session.scalars(select(Event).where(Event.contact_id == merged_id)).all()
    clock.advance(timedelta(hours=1))

    result = merge_contacts(
        session, keep=keep, merge=merge, choices={}, user=marketer, now=clock.now()
    )
    session.commit()

    assert result is keep
    assert session.get(Contact, merged_id) is None
    events = session.scalars(select(Event).order_by(Event.id)).all()
    assert {e.contact_id for e in events} == {keep_id}
    assert [e.type for e in events] == [
        "contact_created", "contact_created", "order", "order", "note", "mail_opened",
        "queued", "queued", "contact_merged",
    ]  # fmt: skip
    assert all(e.contact_id == keep_id for e in loaded)
    assert timeline(session, keep_id)[0].type == "contact_merged"
    assert {m.id: m.contact_id for m in session.scalars(select(Message))} == {
        keep_message.id: keep_id,
        merge_message.id: keep_id,
    }
    merged_event = events[-1]
    assert merged_event.occurred_at == clock.now()
    assert merged_event.payload == {
        "merged_contact_id": merged_id,
        "merged_email": "a.mueller@web.example",
        "merged_name": "Anna Mueller",
        "merged_created_at": "2026-01-05T09:00:00+00:00",
        "merged_by_user_id": marketer.id,
        "merged_by_email": "merger@nurture.example",
        # An empty field of the kept contact is filled by default.
        "taken": {"phone": "+49 221 123456"},
        "replaced": {},
        # What only the merged contact said and did not survive: kept in the event.
        "dropped": {"email": "a.mueller@web.example", "last_name": "Mueller"},
    }
    assert keep.tags == ["kunde", "newsletter"]
    assert (keep.email, keep.last_name, keep.phone) == (
        "anna@firma.example",
        "Müller",
        "+49 221 123456",
    )
    assert keep.updated_at == clock.now()


def test_chosen_fields_are_taken_including_email_and_customer_number(
    session: Session, clock: FrozenClock, marketer: User
) -> None:
    create_field(session, key="branche", label="Branche", kind="text", choices=[], now=clock.now())
    create_field(session, key="umsatz", label="Umsatz", kind="number", choices=[], now=clock.now())
    create_field(session, key="seit", label="Kunde seit", kind="date", choices=[], now=clock.now())
    keep = make_contact(
        session, clock, email="old@firma.example", first_name="Jan", customer_number="K-100",
        birthday="1980-01-02", lifecycle="customer", city="Köln",
        custom={"branche": "Handel", "umsatz": 5},
    )  # fmt: skip
    merge = make_contact(
        session, clock, email="new@firma.example", first_name="Jan-Peter", gender="male",
        customer_number="K-200", lifecycle="at_risk", city="Bonn",
        custom={"branche": "Bau", "umsatz": 7, "seit": "2001-02-03"},
    )  # fmt: skip
    dismiss(session, keep.id, merge.id, user=marketer, now=clock.now())
    session.commit()
    merged_id = merge.id

    merge_contacts(
        session,
        keep=keep,
        merge=merge,
        choices={
            "email": "merge",
            "customer_number": "merge",
            "first_name": "merge",
            "lifecycle": "merge",
            "city": "keep",
            "custom.branche": "merge",
        },
        user=marketer,
        now=clock.now(),
    )
    session.commit()
    session.expire_all()

    kept = session.scalars(select(Contact)).one()
    assert kept.id == keep.id
    assert kept.email == "new@firma.example"
    assert kept.customer_number == "K-200"
    assert kept.first_name == "Jan-Peter"
    assert kept.gender == "male"  # "unknown" counts as empty
    assert kept.lifecycle == Lifecycle.AT_RISK
    assert kept.city == "Köln"
    assert kept.birthday == date(1980, 1, 2)
    assert kept.custom == {"branche": "Bau", "umsatz": 5, "seit": "2001-02-03"}
    # The dismissal named the merged contact: it is gone with it.
    assert session.scalars(select(DuplicateDismissal)).all() == []
    payload = session.scalars(select(Event).where(Event.type == "contact_merged")).one().payload
    assert payload["merged_contact_id"] == merged_id
    assert payload["taken"] == {
        "email": "new@firma.example",
        "first_name": "Jan-Peter",
        "gender": "male",
        "customer_number": "K-200",
        "lifecycle": "at_risk",
        "custom.branche": "Bau",
        "custom.seit": "2001-02-03",
    }
    assert payload["replaced"] == {
        "email": "old@firma.example",
        "first_name": "Jan",
        "customer_number": "K-100",
        "lifecycle": "customer",
        "custom.branche": "Handel",
    }
    assert payload["dropped"] == {"city": "Bonn", "custom.umsatz": 7}


def test_a_contact_cannot_be_merged_with_itself(
    session: Session, clock: FrozenClock, marketer: User
) -> None:
    contact = make_contact(session, clock)
    session.commit()
    with pytest.raises(MergeError) as info:
        merge_contacts(
            session, keep=contact, merge=contact, choices={}, user=marketer, now=clock.now()
        )
    assert str(info.value) == "A contact cannot be merged with itself."
    assert session.get(Contact, contact.id) is contact


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"id": "merge"}, "id cannot be chosen when merging."),
        ({"custom.nope": "merge"}, "custom.nope cannot be chosen when merging."),
        ({"email": "both"}, "Choose keep or merge for email."),
    ],
)
def test_unknown_choices_are_refused(
    session: Session, clock: FrozenClock, marketer: User, choices: dict[str, str], message: str
) -> None:
    keep, merge = make_contact(session, clock), make_contact(session, clock)
    session.commit()
    with pytest.raises(MergeError) as info:
        merge_contacts(
            session, keep=keep, merge=merge, choices=choices, user=marketer, now=clock.now()
        )
    assert str(info.value) == message
    session.rollback()
    assert session.get(Contact, merge.id) is not None


def test_a_merge_notices_that_the_other_was_merged_already(
    app: Flask, session: Session, clock: FrozenClock, marketer: User
) -> None:
    keep, merge = make_contact(session, clock), make_contact(session, clock)
    session.commit()
    merged_id = merge.id
    other = app.extensions["nurture"].db.session()
    try:
        # Someone else loaded the same pair a moment ago …
        stale_keep = other.get(Contact, keep.id)
        stale_merge = other.get(Contact, merge.id)
        merge_contacts(session, keep=keep, merge=merge, choices={}, user=None, now=clock.now())
        session.commit()
        # … and presses "Merge" too.
        other.commit()  # a new transaction, as a new request would have
        with pytest.raises(MergeError, match=f"Contact {merged_id} no longer exists"):
            merge_contacts(
                other, keep=stale_keep, merge=stale_merge, choices={}, user=None, now=clock.now()
            )
    finally:
        other.close()


Seen = list[tuple[int, int, bool, int, datetime]]


@pytest.fixture
def hook_calls() -> Iterator[Seen]:
    seen: Seen = []

    def hook(session: Session, keep: Contact, merge: Contact, now: datetime) -> None:
        still_there = session.scalar(select(Contact.id).where(Contact.id == merge.id))
        own_events = session.scalars(select(Event).where(Event.contact_id == merge.id)).all()
        seen.append((keep.id, merge.id, still_there == merge.id, len(own_events), now))

    register_merge_hook(hook)
    register_merge_hook(hook)  # registering twice runs it once
    try:
        yield seen
    finally:
        unregister_merge_hook(hook)


def test_merge_hooks_see_both_contacts_before_the_merged_one_is_deleted(
    session: Session, clock: FrozenClock, marketer: User, hook_calls: Seen
) -> None:
    keep, merge = make_contact(session, clock), make_contact(session, clock)
    session.commit()

    merge_contacts(session, keep=keep, merge=merge, choices={}, user=marketer, now=clock.now())

    # The merged contact still exists and still owns its contact_created event.
    assert hook_calls == [(keep.id, merge.id, True, 1, clock.now())]


def test_a_hook_that_refuses_refuses_the_whole_merge(
    session: Session, clock: FrozenClock, marketer: User
) -> None:
    def refuse(_session: Session, _keep: Contact, _merge: Contact, _now: datetime) -> None:
        raise MergeError("Consent records disagree.")

    keep, merge = make_contact(session, clock), make_contact(session, clock)
    session.commit()
    register_merge_hook(refuse)
    try:
        with pytest.raises(MergeError, match="Consent records disagree"):
            merge_contacts(
                session, keep=keep, merge=merge, choices={}, user=marketer, now=clock.now()
            )
    finally:
        unregister_merge_hook(refuse)
    session.rollback()
    assert session.get(Contact, merge.id) is not None
    assert session.scalars(select(Event).where(Event.type == "contact_merged")).all() == []

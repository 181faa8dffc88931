"""Merging two contacts keeps both consent histories and the stricter consent per topic."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record, states, text_version
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentState,
    Topic,
)
from nurture.contacts.merge import _hooks, merge_contacts
from nurture.contacts.models import Contact
from tests.factories import grant_consent, make_contact, make_topic

WEB = Origin(source="form:abc", ip="192.0.2.7", user_agent="Firefox")


def _act(session: Session, clock: FrozenClock, contact: Contact, topic: Topic, action: Action):  # type: ignore[no-untyped-def]
    clock.advance(minutes=1)
    return record(
        session, contact_id=contact.id, topic=topic, action=action, origin=WEB, now=clock.now()
    )


def _ledger(session: Session, contact_id: int) -> list[tuple[str, str, str]]:
    rows = session.scalars(
        select(ConsentEntry).where(ConsentEntry.contact_id == contact_id).order_by(ConsentEntry.id)
    )
    return [(row.action.value, row.source, session.get(Topic, row.topic_id).slug) for row in rows]


def _merge(session: Session, clock: FrozenClock, keep: Contact, merge: Contact) -> Contact:
    clock.advance(minutes=1)
    kept = merge_contacts(session, keep=keep, merge=merge, choices={}, user=None, now=clock.now())
    session.commit()
    return kept


def _state(session: Session, contact_id: int, topic: Topic) -> ConsentState | None:
    row = states(session, contact_id).get(topic.id)
    return row.state if row is not None else None


def test_the_hook_is_registered_by_the_app(app: Flask) -> None:
    assert "keep_stricter_consent" in [hook.__name__ for hook in _hooks]


def test_a_withdrawal_of_the_merged_contact_narrows_the_survivor(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    news = grant_consent(session, clock, keep, "news")
    grant_consent(session, clock, merge, "news")
    _act(session, clock, merge, news, Action.WITHDRAWN)
    session.commit()
    merged_id = merge.id

    _merge(session, clock, keep, merge)

    assert _state(session, keep.id, news) is ConsentState.NONE
    # Both histories, then the merge's own entry that carries the withdrawal over.
    assert _ledger(session, keep.id) == [
        ("confirmed", "test", "news"),
        ("confirmed", "test", "news"),
        ("withdrawn", "form:abc", "news"),
        ("withdrawn", f"merge:{merged_id}", "news"),
    ]
    last = session.scalars(
        select(ConsentEntry).where(ConsentEntry.contact_id == keep.id).order_by(ConsentEntry.id)
    ).all()[-1]
    assert last.evidence == {
        "merged_contact_id": merged_id,
        "merged_state": "none",
        "kept_state": "granted",
    }
    leftovers = session.scalar(
        select(func.count()).select_from(Consent).where(Consent.contact_id == merged_id)
    )
    assert leftovers == 0


def test_a_consent_of_the_merged_contact_never_widens_the_survivor(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    news = grant_consent(session, clock, keep, "news")
    _act(session, clock, keep, news, Action.WITHDRAWN)
    grant_consent(session, clock, merge, "news")
    offers = grant_consent(session, clock, merge, "offers")
    session.commit()

    _merge(session, clock, keep, merge)

    assert _state(session, keep.id, news) is ConsentState.NONE
    # A topic only the merged contact had: the stricter of "granted" and "nothing" is nothing;
    # its history still moves along, so a new confirmation can build on it.
    assert _state(session, keep.id, offers) is None
    assert _ledger(session, keep.id) == [
        ("confirmed", "test", "news"),
        ("withdrawn", "form:abc", "news"),
        ("confirmed", "test", "news"),
        ("confirmed", "test", "offers"),
    ]


def test_an_objection_of_either_side_ends_the_existing_customer_basis(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    _act(session, clock, keep, shop, Action.EXISTING_CUSTOMER)
    _act(session, clock, merge, shop, Action.EXISTING_CUSTOMER)
    _act(session, clock, merge, shop, Action.OBJECTED)
    session.commit()
    merged_id = merge.id

    _merge(session, clock, keep, merge)

    assert _state(session, keep.id, shop) is ConsentState.OBJECTED
    assert _ledger(session, keep.id)[-1] == ("objected", f"merge:{merged_id}", "shop")


def test_the_survivors_objection_stays_when_the_merged_contact_consented(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    _act(session, clock, keep, shop, Action.OBJECTED)
    _act(session, clock, merge, shop, Action.CONFIRMED)
    session.commit()

    _merge(session, clock, keep, merge)

    assert _state(session, keep.id, shop) is ConsentState.OBJECTED
    assert [action for action, _source, _slug in _ledger(session, keep.id)] == [
        "objected",
        "confirmed",
    ]


def test_a_merged_contact_that_never_confirmed_changes_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    news = grant_consent(session, clock, keep, "news")
    _act(session, clock, merge, news, Action.REQUESTED)
    _act(session, clock, merge, news, Action.EXPIRED)
    session.commit()

    _merge(session, clock, keep, merge)

    assert _state(session, keep.id, news) is ConsentState.GRANTED
    assert [a for a, _s, _t in _ledger(session, keep.id)] == ["confirmed", "requested", "expired"]


def test_pending_requests_move_to_the_survivor(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    keep = make_contact(session, clock, email="anna@kunde.example")
    merge = make_contact(session, clock, email="a.mueller@privat.example")
    news = make_topic(session, clock, "news")
    text_id = text_version(session, "Ja, Newsletter.", language="de", now=clock.now()).id
    request = ConsentRequest(
        contact_id=merge.id,
        topic_ids=[news.id],
        token_hash="0" * 64,
        text_id=text_id,
        source="form:abc",
        requested_at=clock.now(),
        expires_at=clock.now(),
    )
    session.add(request)
    session.commit()
    request_id = request.id

    _merge(session, clock, keep, merge)

    session.expire_all()
    moved = session.get(ConsentRequest, request_id)
    assert moved is not None and moved.contact_id == keep.id

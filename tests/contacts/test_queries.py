import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts import queries
from nurture.contacts.custom_fields import create_field
from nurture.contacts.editing import ContactExists, create_contact, edit_contact
from nurture.contacts.fields import ContactDataError
from nurture.contacts.models import Contact, Lifecycle, Segment
from nurture.contacts.queries import ContactFilter, count_matching, list_page
from nurture.events import Event, record_event
from nurture.mail import outbox
from nurture.mail.models import Purpose
from tests.factories import make_contact


def _user(session: Session, clock: FrozenClock, email: str) -> User:
    """A user row without a real password hash: Argon2 would cost a second per test here."""
    user = User(email=email, role=Role.SALES, password_hash="-", created_at=clock.now())
    session.add(user)
    session.flush()
    return user


def _emails(page: queries.ContactPage) -> list[str]:
    return [c.email for c in page.rows]


def _find(session: Session, clock: FrozenClock, **filters: object) -> list[str]:
    page = list_page(session, ContactFilter(**filters), now=clock.now(), sort="oldest")  # type: ignore[arg-type]
    return _emails(page)


# -- search and filters ----------------------------------------------------------------------


def test_search_is_a_case_insensitive_prefix_over_email_last_name_and_company(
    session: Session, clock: FrozenClock
) -> None:
    make_contact(session, clock, email="anna.mueller@kunde.example", last_name="Schmidt")
    make_contact(session, clock, email="b@kunde.example", last_name="Müller")
    make_contact(session, clock, email="c@kunde.example", company="Müllerei GmbH")
    make_contact(session, clock, email="d@kunde.example", last_name="Obermüller")
    make_contact(session, clock, email="e@kunde.example", company="100% Bio")
    make_contact(session, clock, email="f@kunde.example", company="100 Prozent")
    session.commit()

    assert _find(session, clock, search="ANNA.m") == ["anna.mueller@kunde.example"]
    assert _find(session, clock, search="mül") == ["b@kunde.example", "c@kunde.example"]
    assert _find(session, clock, search="  Müll ") == ["b@kunde.example", "c@kunde.example"]
    assert _find(session, clock, search="müllerei") == ["c@kunde.example"]
    # Nothing matches inside a word: prefixes only, so the indexes can serve.
    assert _find(session, clock, search="ller") == []
    # LIKE wildcards typed by the user are literal characters.
    assert _find(session, clock, search="100%") == ["e@kunde.example"]
    assert _find(session, clock, search="_@") == []


def test_lifecycle_owner_and_tag_filters(session: Session, clock: FrozenClock) -> None:
    owner = _user(session, clock, "owner@nurture.example")
    other = _user(session, clock, "other@nurture.example")
    make_contact(session, clock, email="a@k.example", lifecycle="customer", owner_id=owner.id)
    make_contact(session, clock, email="b@k.example", lifecycle="lead", tags=["VIP", "messe"])
    make_contact(session, clock, email="c@k.example", lifecycle="customer", tags=["vipx"])
    make_contact(session, clock, email="d@k.example", owner_id=other.id, tags=["vip"])
    session.commit()

    assert _find(session, clock, lifecycle=Lifecycle.CUSTOMER) == ["a@k.example", "c@k.example"]
    assert _find(session, clock, owner=owner.id) == ["a@k.example"]
    assert _find(session, clock, owner="none") == ["b@k.example", "c@k.example"]
    # Tags match whole and case-insensitively (they are stored lower-cased).
    assert _find(session, clock, tag=" Vip ") == ["b@k.example", "d@k.example"]
    assert _find(session, clock, tag="messe", lifecycle=Lifecycle.LEAD) == ["b@k.example"]
    assert _find(session, clock, tag="vip", owner="none") == ["b@k.example"]
    assert _find(session, clock, tag="nope") == []


def test_count_stops_at_the_cap(session: Session, clock: FrozenClock) -> None:
    for i in range(12):
        make_contact(session, clock, email=f"c{i}@k.example", company="Acme" if i < 5 else "")
    session.commit()
    everyone = ContactFilter()
    assert count_matching(session, everyone, now=clock.now()) == 12
    assert count_matching(session, everyone, now=clock.now(), cap=10) == 11
    assert count_matching(session, ContactFilter(search="acme"), now=clock.now(), cap=10) == 5


# -- keyset paging ---------------------------------------------------------------------------


@pytest.fixture
def many(session: Session, clock: FrozenClock) -> list[Contact]:
    """120 contacts with repeated names, companies and update times, so ties need the id."""
    rows = []
    for i in range(120):
        if i % 7 == 0:
            clock.advance(seconds=1, microseconds=123)
        rows.append(
            {
                "email": f"p{i:03d}@k.example",
                "last_name": ["Adler", "becker", "Cramer", "", "Zander"][i % 5] + str(i % 3),
                "company": ["Acme", "beta", "Corp"][i % 3],
                "lifecycle": Lifecycle.LEAD,
                "tags": [],
                "custom": {},
                "created_at": clock.now(),
                # Every ninth contact changed later, so "updated" differs from the id order.
                "updated_at": clock.now() + timedelta(minutes=5 if i % 9 == 0 else 0),
            }
        )
    # One statement: the upsert path is tested elsewhere, and 120 of them would be slow.
    session.execute(insert(Contact), rows)
    session.commit()
    return list(session.scalars(select(Contact)))


def _expected(contacts: list[Contact], sort: str) -> list[int]:
    keys = {
        "newest": lambda c: -c.id,
        "oldest": lambda c: c.id,
        # ASCII names: Python's lower() and SQLite's agree.
        "last_name": lambda c: (c.last_name.lower(), c.id),
        "company": lambda c: (c.company.lower(), c.id),
        "updated": lambda c: (-c.updated_at.timestamp(), -c.id),
    }
    return [c.id for c in sorted(contacts, key=keys[sort])]


def test_keyset_paging_walks_every_sort_forwards_and_back(
    session: Session, clock: FrozenClock, many: list[Contact]
) -> None:
    everyone = ContactFilter()
    for sort in queries.SORTS:
        pages = [list_page(session, everyone, now=clock.now(), sort=sort)]
        assert pages[0].prev_cursor is None
        while pages[-1].next_cursor:
            cursor = pages[-1].next_cursor
            pages.append(list_page(session, everyone, now=clock.now(), sort=sort, after=cursor))
        assert [len(p.rows) for p in pages] == [50, 50, 20], sort
        walked = [c.id for page in pages for c in page.rows]
        assert walked == _expected(many, sort), sort  # no duplicates, no gaps, in order

        # Previous from the last page gives the same pages again, back to a real first page.
        back = pages[-1]
        for expected in reversed(pages[:-1]):
            assert back.prev_cursor, sort
            back = list_page(session, everyone, now=clock.now(), sort=sort, before=back.prev_cursor)
            assert [c.id for c in back.rows] == [c.id for c in expected.rows], sort
        assert back.prev_cursor is None


def test_paging_keeps_the_filters(
    session: Session, clock: FrozenClock, many: list[Contact]
) -> None:
    beta = ContactFilter(search="beta")
    first = list_page(session, beta, now=clock.now(), sort="last_name", limit=30)
    second = list_page(session, beta, now=clock.now(), sort="last_name", after=first.next_cursor)
    ids = [c.id for c in first.rows + second.rows]
    assert len(ids) == len(set(ids)) == 40
    assert {c.company for c in first.rows + second.rows} == {"beta"}


TAMPERED = [
    "not base64 at all!",
    base64.urlsafe_b64encode(b"{broken json").decode(),
    base64.urlsafe_b64encode(json.dumps(["company", "acme", 5]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["last_name", 7, 5]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["last_name", "x", "5; drop"]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["last_name", "x", True]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["last_name", "x", 2**70]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["last_name", "x"]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "A" * 5000,
]


def test_a_tampered_cursor_gives_the_first_page(
    session: Session, clock: FrozenClock, many: list[Contact]
) -> None:
    first = list_page(session, ContactFilter(), now=clock.now(), sort="last_name")
    for cursor in TAMPERED:
        for direction in ("after", "before"):
            page = list_page(
                session, ContactFilter(), now=clock.now(), sort="last_name", **{direction: cursor}
            )
            assert [c.id for c in page.rows] == [c.id for c in first.rows], cursor
            assert page.prev_cursor is None


def test_an_updated_cursor_needs_a_time_zone(session: Session, clock: FrozenClock) -> None:
    naive = base64.urlsafe_b64encode(json.dumps(["updated", "2026-01-01T00:00:00", 3]).encode())
    assert queries.decode_cursor("updated", naive.decode()) is None
    aware = queries.encode_cursor("updated", datetime(2026, 1, 1, tzinfo=UTC), 3)
    assert queries.decode_cursor("updated", aware) == (datetime(2026, 1, 1, tzinfo=UTC), 3)


def _segment(session: Session, clock: FrozenClock, name: str, conditions: list) -> Segment:  # type: ignore[type-arg]
    segment = Segment(
        name=name,
        definition={"match": "all", "conditions": conditions},
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    session.add(segment)
    session.commit()
    return segment


def test_a_segment_filters_the_list(session: Session, clock: FrozenClock) -> None:
    pytest.importorskip("nurture.contacts.segments")
    make_contact(session, clock, email="a@k.example", lifecycle="customer", city="Köln")
    make_contact(session, clock, email="b@k.example", lifecycle="lead", city="Köln")
    make_contact(session, clock, email="c@k.example", lifecycle="customer", city="Bonn")
    customers = _segment(
        session, clock, "Kunden", [{"field": "lifecycle", "op": "eq", "value": "customer"}]
    )
    assert _find(session, clock, segment_id=customers.id) == ["a@k.example", "c@k.example"]
    # The segment combines with the other filters.
    assert _find(session, clock, segment_id=customers.id, search="c@") == ["c@k.example"]
    # A definition that no longer validates (its custom field is gone) is reported, not a 500.
    broken = _segment(session, clock, "Alt", [{"field": "custom.gone", "op": "eq", "value": "x"}])
    with pytest.raises(queries.SegmentUnavailable, match="Alt cannot be applied"):
        _find(session, clock, segment_id=broken.id)


def test_an_unknown_segment_is_reported(session: Session, clock: FrozenClock) -> None:
    with pytest.raises(queries.SegmentUnavailable, match="no longer exists"):
        list_page(session, ContactFilter(segment_id=999), now=clock.now())


# -- timeline --------------------------------------------------------------------------------


def test_timeline_page_filters_by_category_and_pages(session: Session, clock: FrozenClock) -> None:
    contact = make_contact(session, clock, email="t@k.example")
    message = outbox.enqueue(
        session,
        key="k:1",
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        context={},
        builtin="optin_confirmation",
        now=clock.now(),
        contact_id=contact.id,
    )
    assert message is not None
    message.subject = "Wir vermissen Sie"
    for i in range(5):
        clock.advance(minutes=1)
        record_event(
            session,
            "order",
            now=clock.now(),
            contact_id=contact.id,
            payload={"amount": f"{i}.50", "currency": "EUR"},
        )
    clock.advance(minutes=1)
    record_event(session, "sent", now=clock.now(), contact_id=contact.id, message_id=message.id)
    session.commit()

    everything = queries.timeline_page(session, contact.id)
    assert [e.event.type for e in everything.entries] == [
        "sent",
        *["order"] * 5,
        "queued",
        "contact_created",
    ]
    assert everything.entries[0].subject == "Wir vermissen Sie"
    assert everything.entries[1].amount == Decimal("4.50")
    assert everything.older is None

    orders = queries.timeline_page(session, contact.id, category="orders", limit=2)
    assert [e.amount for e in orders.entries] == [Decimal("4.50"), Decimal("3.50")]
    older = queries.timeline_page(
        session, contact.id, category="orders", before_id=orders.older, limit=2
    )
    assert [e.amount for e in older.entries] == [Decimal("2.50"), Decimal("1.50")]
    mails = queries.timeline_page(session, contact.id, category="mails")
    assert [e.event.type for e in mails.entries] == ["sent", "queued"]
    # An unknown category is "all".
    assert len(queries.timeline_page(session, contact.id, category="bogus").entries) == 8


# -- editing ---------------------------------------------------------------------------------


def test_edit_replaces_tags_clears_fields_and_records_the_changed_names(
    session: Session, clock: FrozenClock
) -> None:
    user = _user(session, clock, "editor@nurture.example")
    create_field(
        session, key="tier", label="Stufe", kind="choice", choices=["A", "B"], now=clock.now()
    )
    contact = make_contact(
        session, clock, city="Köln", phone="0221 1", tags=["a", "b"], custom={"tier": "A"}
    )
    session.commit()
    clock.advance(hours=1)
    changed = edit_contact(
        session,
        contact,
        {"city": "", "phone": "0221 1", "tags": ["b", "c"], "custom": {"tier": None}},
        now=clock.now(),
        by=user,
    )
    session.commit()
    assert changed == ["city", "custom.tier", "tags"]
    assert (contact.city, contact.tags, contact.custom) == ("", ["b", "c"], {})
    assert contact.updated_at == clock.now()
    event = session.scalar(select(Event).where(Event.type == "contact_updated"))
    assert event is not None and event.contact_id == contact.id
    assert event.payload["fields"] == ["city", "custom.tier", "tags"]
    assert (event.payload["by"], event.payload["by_id"]) == (user.email, user.id)
    # The same save again changes nothing and records nothing.
    assert (
        edit_contact(session, contact, {"city": "", "tags": ["c", "b"]}, now=clock.now(), by=user)
        == []
    )
    assert session.scalar(select(func.count()).where(Event.type == "contact_updated")) == 1


def test_edit_refuses_a_customer_number_of_another_contact(
    session: Session, clock: FrozenClock
) -> None:
    user = _user(session, clock, "editor@nurture.example")
    make_contact(session, clock, customer_number="K-1")
    contact = make_contact(session, clock)
    session.commit()
    with pytest.raises(ContactDataError) as refused:
        edit_contact(session, contact, {"customer_number": " K-1 "}, now=clock.now(), by=user)
    assert refused.value.errors == {"customer_number": "belongs to another contact"}


def test_create_never_updates_an_existing_contact(session: Session, clock: FrozenClock) -> None:
    existing = make_contact(session, clock, email="da@k.example", city="Bonn", customer_number="9")
    session.commit()
    with pytest.raises(ContactExists) as exists:
        create_contact(session, {"email": "DA@k.example", "city": "Köln"}, now=clock.now())
    assert exists.value.contact.id == existing.id
    with pytest.raises(ContactDataError) as taken:
        create_contact(session, {"email": "neu@k.example", "customer_number": "9"}, now=clock.now())
    assert taken.value.errors == {"customer_number": "belongs to another contact"}
    session.rollback()
    assert session.get(Contact, existing.id).city == "Bonn"  # type: ignore[union-attr]
    created = create_contact(session, {"email": "neu@k.example", "source": ""}, now=clock.now())
    assert created.source == "manual"

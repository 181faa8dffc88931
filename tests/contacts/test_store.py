import threading
from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts.fields import ContactDataError, normalise_email
from nurture.contacts.models import Contact, Lifecycle
from nurture.contacts.store import find_by_email, list_contacts, update_contact, upsert_contact


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)) or 0


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Anna.Mueller@Example.COM", "anna.mueller@example.com"),
        ("  anna@example.com ", "anna@example.com"),
        ("kontakt@BÜCHER.example", "kontakt@bücher.example"),
        ("kontakt@xn--bcher-kva.example", "kontakt@bücher.example"),
    ],
)
def test_addresses_are_normalised_to_one_form(raw: str, normal: str) -> None:
    assert normalise_email(raw) == normal


def test_upsert_creates_then_updates_the_same_contact(session: Session, clock) -> None:
    contact, created = upsert_contact(
        session,
        {
            "email": "Anna@Example.com",
            "first_name": "anna",
            "gender": "Frau",
            "title": "Dr.",
            "formality": "Sie",
            "language": "de-DE",
            "birthday": "1980-02-29",
            "tags": ["VIP"],
        },
        now=clock.now(),
        source="api",
    )
    session.commit()
    assert created
    assert (contact.email, contact.gender, contact.formality, contact.language) == (
        "anna@example.com",
        "female",
        "formal",
        "de",
    )
    assert contact.birthday == date(1980, 2, 29)
    assert contact.lifecycle == Lifecycle.LEAD
    clock.advance(days=1)
    again, created = upsert_contact(
        session,
        {"email": "ANNA@example.com", "last_name": "Müller", "tags": ["newsletter"]},
        now=clock.now(),
    )
    session.commit()
    assert not created and again.id == contact.id
    assert (again.first_name, again.last_name) == ("anna", "Müller")
    assert again.tags == ["newsletter", "vip"]
    assert again.updated_at == clock.now()
    assert _count(session) == 1


def test_customer_number_finds_the_customer_under_a_new_address(session: Session, clock) -> None:
    first, _ = upsert_contact(
        session, {"email": "old@example.com", "customer_number": "K-1001"}, now=clock.now()
    )
    moved, created = upsert_contact(
        session, {"email": "new@example.com", "customer_number": "K-1001"}, now=clock.now()
    )
    session.commit()
    assert not created and moved.id == first.id and moved.email == "new@example.com"
    assert _count(session) == 1


def test_invalid_data_is_refused_field_by_field(session: Session, clock) -> None:
    with pytest.raises(ContactDataError) as excinfo:
        upsert_contact(
            session,
            {
                "email": "not-an-address",
                "gender": "robot",
                "birthday": "31.02.2020",
                "time_zone": "Mars/Olympus",
                "lifecycle": "vip",
                "nickname": "x",
            },
            now=clock.now(),
        )
    errors = excinfo.value.errors
    assert set(errors) == {"email", "gender", "birthday", "time_zone", "lifecycle", "nickname"}
    assert errors["email"] == "An email address must have an @-sign."
    assert errors["birthday"] == "must be a date as YYYY-MM-DD"
    assert errors["time_zone"] == "'Mars/Olympus' is not a known time zone, e.g. Europe/Berlin"
    assert errors["nickname"] == "is not a contact field"
    assert _count(session) == 0


def test_email_of_another_contact_cannot_be_taken(session: Session, clock) -> None:
    a, _ = upsert_contact(session, {"email": "a@example.com"}, now=clock.now())
    upsert_contact(session, {"email": "b@example.com"}, now=clock.now())
    with pytest.raises(ContactDataError) as excinfo:
        update_contact(session, a, {"email": "B@example.com"}, now=clock.now())
    assert excinfo.value.errors == {"email": "belongs to another contact"}


def test_concurrent_upserts_of_one_address_end_in_one_contact(app, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    db = app.extensions["nurture"].db
    barrier = threading.Barrier(4)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with db.session_scope() as session:
                barrier.wait(timeout=10)
                contact, created = upsert_contact(
                    session,
                    {"email": "race@example.com", "first_name": f"T{n}"},
                    now=clock.now(),
                )
                results.append((contact.id, created))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len({contact_id for contact_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with db.session_scope() as session:
        assert _count(session) == 1


def test_find_and_list(session: Session, clock) -> None:
    for name in ("Adler", "Bauer", "Becker"):
        upsert_contact(
            session,
            {"email": f"{name.lower()}@example.com", "last_name": name, "lifecycle": "customer"},
            now=clock.now(),
        )
    upsert_contact(session, {"email": "x@example.com"}, now=clock.now())
    session.commit()
    assert find_by_email(session, "BAUER@example.com").last_name == "Bauer"  # type: ignore[union-attr]
    assert find_by_email(session, "not an address") is None
    first = list_contacts(session, limit=2)
    rest = list_contacts(session, after_id=first[-1].id, limit=10)
    assert [c.email for c in first + rest] == [
        "adler@example.com",
        "bauer@example.com",
        "becker@example.com",
        "x@example.com",
    ]
    assert [c.last_name for c in list_contacts(session, search="be")] == ["Becker"]
    assert len(list_contacts(session, lifecycle=Lifecycle.CUSTOMER)) == 3
    # LIKE wildcards in the search are taken literally.
    assert list_contacts(session, search="%") == []

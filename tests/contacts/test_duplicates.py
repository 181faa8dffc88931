import random
import time
from datetime import date

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.contacts import duplicates
from nurture.contacts.duplicates import (
    Candidate,
    DuplicateError,
    cologne_phonetic,
    compare,
    dismiss,
    find_candidates,
    fold,
    is_dismissed,
)
from nurture.contacts.models import Contact, DuplicateDismissal
from tests.factories import make_contact, make_user


def _pair(found: list[Candidate], a: Contact, b: Contact) -> Candidate | None:
    low, high = sorted((a.id, b.id))
    return next((c for c in found if (c.low_id, c.high_id) == (low, high)), None)


def test_similar_names_at_the_same_company_are_found_with_reasons(
    session: Session, clock: FrozenClock
) -> None:
    anna = make_contact(
        session, clock, email="anna@muster.de", first_name="Anna", last_name="Müller",
        company="Muster GmbH", city="Köln",
    )  # fmt: skip
    again = make_contact(
        session, clock, email="a.mueller@gmail.example", first_name="Anna",
        last_name="Mueller", company="Muster GmbH & Co. KG", city="Koeln",
    )  # fmt: skip
    colleague = make_contact(
        session, clock, email="peter@muster.de", first_name="Peter", last_name="Schmidt",
        company="Muster GmbH",
    )  # fmt: skip
    session.commit()

    found = find_candidates(session)

    assert found == [
        Candidate(anna.id, again.id, 85, ("similar_name", "same_company", "same_city"))
    ]
    assert _pair(found, anna, colleague) is None


def test_same_phone_in_other_spelling_and_a_typo_in_the_name(
    session: Session, clock: FrozenClock
) -> None:
    thomas = make_contact(
        session, clock, first_name="Thomas", last_name="Meier", phone="+49 30 1234-5678"
    )
    tomas = make_contact(
        session, clock, first_name="Tomas", last_name="Meyer", mobile="030 / 123 456 78"
    )
    session.commit()

    [candidate] = find_candidates(session)

    assert (candidate.low_id, candidate.high_id) == (thomas.id, tomas.id)
    assert candidate.reasons == ("similar_name", "same_phone")
    assert candidate.score >= duplicates.DEFAULT_MIN_SCORE


def test_same_email_local_part_at_another_domain(session: Session, clock: FrozenClock) -> None:
    # Newsletter sign-ups often have no name at all: the address is all there is.
    work = make_contact(session, clock, email="anna.mueller@firma.example")
    private = make_contact(session, clock, email="anna.mueller+news@web.example")
    make_contact(session, clock, email="info@firma.example")
    make_contact(session, clock, email="info@web.example")
    session.commit()

    found = find_candidates(session)

    assert [(c.low_id, c.high_id, c.reasons) for c in found] == [
        (work.id, private.id, ("same_email_local_part",))
    ]


def test_dissimilar_people_and_the_same_name_alone_are_not_listed(
    session: Session, clock: FrozenClock
) -> None:
    # The same common name at different companies: two people.
    make_contact(session, clock, first_name="Thomas", last_name="Müller", company="Alpha AG")
    make_contact(session, clock, first_name="Thomas", last_name="Müller", company="Beta GmbH")
    # A household's shared landline: a family, not one person.
    make_contact(session, clock, first_name="Anna", last_name="Schulz", phone="0221 9876543")
    make_contact(session, clock, first_name="Peter", last_name="Schulz", phone="0221 9876543")
    session.commit()

    assert find_candidates(session) == []


def test_conflicting_birthdays_and_customer_numbers_count_against_a_pair(
    session: Session, clock: FrozenClock
) -> None:
    a = make_contact(
        session, clock, first_name="Jan", last_name="Krüger", company="Nord GmbH",
        birthday="1980-02-01", customer_number="K-1",
    )  # fmt: skip
    b = make_contact(
        session, clock, first_name="Jan", last_name="Krueger", company="Nord GmbH",
        birthday="1985-07-09", customer_number="K-2",
    )  # fmt: skip
    session.commit()

    assert find_candidates(session) == []
    assert compare(a, b) == Candidate(
        a.id, b.id, 0,
        ("similar_name", "same_company", "different_birthday", "different_customer_number"),
    )  # fmt: skip
    assert find_candidates(session, min_score=0)[0].score == 0


def test_same_birthday_adds_evidence(session: Session, clock: FrozenClock) -> None:
    a = make_contact(session, clock, first_name="Lena", last_name="Vogt", birthday="1990-03-04")
    b = make_contact(
        session, clock, first_name="Lena", last_name="Vogt", birthday=date(1990, 3, 4), city="Bonn"
    )
    session.commit()

    [candidate] = find_candidates(session)

    assert (candidate.low_id, candidate.high_id) == (a.id, b.id)
    assert candidate.reasons == ("similar_name", "same_birthday")
    assert candidate.score == 80


def test_dismissed_pairs_are_not_suggested_again(session: Session, clock: FrozenClock) -> None:
    user = make_user(session, clock, role=Role.MARKETER)
    a = make_contact(session, clock, first_name="Anna", last_name="Müller", company="Muster")
    b = make_contact(session, clock, first_name="Anna", last_name="Müller", company="Muster")
    c = make_contact(session, clock, first_name="Anna", last_name="Mueller", company="Muster")
    session.commit()
    assert len(find_candidates(session)) == 3

    # Either way round, and twice: one row.
    dismiss(session, b.id, a.id, user=user, now=clock.now())
    dismiss(session, a.id, b.id, user=user, now=clock.now())
    session.commit()

    rows = session.execute(select(DuplicateDismissal)).scalars().all()
    assert [(r.low_id, r.high_id, r.dismissed_by_id) for r in rows] == [(a.id, b.id, user.id)]
    assert rows[0].dismissed_at == clock.now()
    assert is_dismissed(session, b.id, a.id)
    remaining = find_candidates(session)
    assert {(x.low_id, x.high_id) for x in remaining} == {(a.id, c.id), (b.id, c.id)}
    assert find_candidates(session, contact_id=a.id) == [_pair(remaining, a, c)]


def test_a_contact_cannot_be_dismissed_as_its_own_duplicate(
    session: Session, clock: FrozenClock
) -> None:
    a = make_contact(session, clock)
    with pytest.raises(DuplicateError, match="cannot be a duplicate of itself"):
        dismiss(session, a.id, a.id, user=None, now=clock.now())


def test_contact_id_keeps_only_pairs_with_that_contact(
    session: Session, clock: FrozenClock
) -> None:
    anna = make_contact(session, clock, first_name="Anna", last_name="Berg", phone="040 11223344")
    anna2 = make_contact(session, clock, first_name="Anna", last_name="Berg", phone="04011223344")
    jonas = make_contact(session, clock, first_name="Jonas", last_name="Hart", company="Hart KG")
    jonas2 = make_contact(session, clock, first_name="Jonas", last_name="Hardt", company="Hart")
    session.commit()

    assert {(c.low_id, c.high_id) for c in find_candidates(session)} == {
        (anna.id, anna2.id),
        (jonas.id, jonas2.id),
    }
    [only] = find_candidates(session, contact_id=jonas2.id)
    assert (only.low_id, only.high_id) == (jonas.id, jonas2.id)
    assert find_candidates(session, contact_id=987654) == []
    assert find_candidates(session, limit=1) == [find_candidates(session)[0]]


def _bulk(session: Session, clock: FrozenClock, rows: list[dict[str, object]]) -> None:
    now = clock.now()
    defaults = {"tags": [], "custom": {}, "lifecycle": "lead", "created_at": now, "updated_at": now}
    session.execute(insert(Contact), [defaults | row for row in rows])
    session.commit()


def test_blocks_larger_than_the_limit_are_skipped(session: Session, clock: FrozenClock) -> None:
    # A switchboard number and one very common name: the keys say nothing about who is who.
    size = duplicates.MAX_BLOCK + 1
    _bulk(
        session,
        clock,
        [
            {"email": f"person{i}@firma{i}.example", "first_name": "Anna", "last_name": "Müller",
             "phone": "+49 89 1000-0"}
            for i in range(size)
        ],
    )  # fmt: skip
    assert find_candidates(session) == []
    first = session.scalar(select(func.min(Contact.id)))
    assert find_candidates(session, contact_id=first) == []

    # The same people in a block of three are compared.
    session.execute(Contact.__table__.delete().where(Contact.id > first + 2))
    session.commit()
    assert len(find_candidates(session)) == 3


FIRST = ["Anna", "Peter", "Thomas", "Maria", "Julia", "Michael", "Stefan", "Sabine", "Jan", "Lea"]
LAST = ["Becker", "Wagner", "Hoffmann", "Schulz", "Koch", "Richter", "Klein", "Wolf", "Neumann"]


def test_thousands_of_contacts_are_searched_quickly(session: Session, clock: FrozenClock) -> None:
    rnd = random.Random(7)
    rows = [
        {
            "email": f"kunde{i}@d{i % 301}.example",
            "first_name": rnd.choice(FIRST),
            "last_name": f"{rnd.choice(LAST)}{i % 97}",
            "company": f"Firma {rnd.randrange(1000)} GmbH",
            "phone": f"+49 30 {rnd.randrange(10**7, 10**8)}",
            "city": rnd.choice(["Berlin", "Köln", "Hamburg"]),
        }
        for i in range(4000)
    ]
    rows += [
        # The planted pair: one person, two addresses, umlaut and phone spelt differently.
        {"email": "joerg.kaestner@alt.example", "first_name": "Jörg", "last_name": "Kästner",
         "company": "Kästner Bau GmbH", "phone": "+49 351 4455667"},
        {"email": "j.kaestner@neu.example", "first_name": "Joerg", "last_name": "Kaestner",
         "company": "Kaestner Bau", "mobile": "0351 445 5667"},
        # Same surname and company, another person: must not be listed.
        {"email": "ute.kaestner@alt.example", "first_name": "Ute", "last_name": "Kästner",
         "company": "Kästner Bau GmbH", "phone": "+49 351 9988776"},
    ]  # fmt: skip
    _bulk(session, clock, rows)
    ids = dict(session.execute(select(Contact.email, Contact.id).where(Contact.id > 4000)).all())
    joerg, j, ute = (
        ids["joerg.kaestner@alt.example"],
        ids["j.kaestner@neu.example"],
        ids["ute.kaestner@alt.example"],
    )

    started = time.perf_counter()
    found = find_candidates(session, limit=10_000)
    elapsed = time.perf_counter() - started

    pairs = {(c.low_id, c.high_id): c for c in found}
    assert pairs[(joerg, j)].reasons == ("similar_name", "same_phone", "same_company")
    assert pairs[(joerg, j)].score == 100
    assert (joerg, ute) not in pairs and (j, ute) not in pairs
    assert elapsed < 2.0, f"{len(rows)} contacts took {elapsed:.2f} s"
    started = time.perf_counter()
    assert [(c.low_id, c.high_id) for c in find_candidates(session, contact_id=ute)] == []
    assert time.perf_counter() - started < 1.5


def test_folding_and_phonetics() -> None:
    assert fold("  MÜLLER-Lüdenscheidt ") == "mueller-luedenscheidt"
    assert fold("Straße") == "strasse"
    assert fold("Renée Ørsted") == "renee ørsted"
    assert fold(None) == ""
    assert {cologne_phonetic(fold(n)) for n in ("Meier", "Meyer", "Maier", "Mayer")} == {"67"}
    assert cologne_phonetic(fold("Müller")) == cologne_phonetic("miller") == "657"
    assert cologne_phonetic("muellerluedenscheidt") == "65752682"
    assert cologne_phonetic("wikipedia") == "3412"
    assert cologne_phonetic("breschnew") == "17863"
    assert cologne_phonetic("") == ""

"""The batch engine of the importer: same answers as row by row, at any batch size."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts.importer import import_contacts
from nurture.contacts.models import Contact
from nurture.events import Event
from tests.factories import make_contact

FILE = (
    "E-Mail;Vorname;Nachname;Ort;Kundennummer;Tags\r\n"
    "anna@kunde.example;Anna;Müller;Köln;K1;a\r\n"
    "bernd@kunde.example;Bernd;Schulz;Bonn;K2;\r\n"
    "ANNA@kunde.example;;;Berlin;;b\r\n"  # Anna again, moved: same batch, later row wins
    "carla@kunde.example;Carla;Wolf;Ulm;K2;\r\n"  # Bernd's number under a new address
    "dora@kunde.example;Dora;Klein;Kiel;K4;\r\n"
    "anna@kunde.example;Anna;Müller;Berlin;K1;\r\n"  # nothing new
).encode()


def _state(session: Session) -> list[tuple[str, str, str, str | None, list[str]]]:
    rows = session.execute(
        select(
            Contact.email, Contact.first_name, Contact.city, Contact.customer_number, Contact.tags
        ).order_by(Contact.email)
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_repeats_within_a_file_apply_in_order_at_any_batch_size(
    session: Session, clock: FrozenClock, batch_size: int
) -> None:
    report = import_contacts(
        session, FILE, mapping=None, now=clock.now(), source="t", batch_size=batch_size
    )
    session.commit()
    assert (report.rows, report.created, report.updated, report.unchanged) == (6, 3, 2, 1)
    assert report.errors == []
    assert _state(session) == [
        ("anna@kunde.example", "Anna", "Berlin", "K1", ["a", "b"]),
        # The customer number wins: Bernd's row now carries Carla's address and data.
        ("carla@kunde.example", "Carla", "Ulm", "K2", []),
        ("dora@kunde.example", "Dora", "Kiel", "K4", []),
    ]
    created = session.scalar(
        select(func.count()).select_from(Event).where(Event.type == "contact_created")
    )
    assert created == 3


def test_a_row_joining_two_existing_contacts_is_refused(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    make_contact(session, clock, email="eva@kunde.example", customer_number="K9")
    make_contact(session, clock, email="finn@kunde.example")
    session.commit()
    data = b"E-Mail;Kundennummer;Ort\r\nfinn@kunde.example;K9;Rom\r\ngreta@kunde.example;;Oslo\r\n"
    report = import_contacts(session, data, mapping=None, now=clock.now(), source="t")
    session.commit()
    assert [(e.line, e.field, e.message) for e in report.errors] == [
        (2, "email", "email: belongs to another contact")
    ]
    assert (report.created, report.updated) == (1, 0)
    assert session.scalar(select(Contact.city).where(Contact.customer_number == "K9")) == ""


def test_objects_loaded_before_the_import_show_its_changes(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    anna = make_contact(session, clock, email="anna@kunde.example", city="Köln")
    session.commit()
    import_contacts(
        session,
        b"E-Mail;Ort\r\nanna@kunde.example;Berlin\r\n",
        mapping=None,
        now=clock.now(),
        source="t",
    )
    assert anna.city == "Berlin"


def test_on_batch_may_commit_between_batches(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    lines = "".join(f"k{i}@kunde.example;Name {i}\r\n" for i in range(25))
    data = ("E-Mail;Nachname\r\n" + lines + "kaputt;X\r\n").encode()
    seen: list[tuple[int, int, int]] = []

    def on_batch(report) -> None:  # type: ignore[no-untyped-def]
        seen.append((report.rows, report.created, len(report.errors)))
        session.commit()

    import_contacts(
        session,
        data,
        mapping=None,
        now=clock.now(),
        source="t",
        batch_size=10,
        on_batch=on_batch,
    )
    session.rollback()  # whatever came after the last commit would be lost; nothing did
    assert seen == [(10, 10, 0), (20, 20, 0), (26, 25, 1)]
    assert session.scalar(select(func.count()).select_from(Contact)) == 25


def test_two_imports_of_overlapping_files_at_once_make_no_duplicate(app, clock) -> None:  # type: ignore[no-untyped-def]
    db = app.extensions["nurture"].db
    rows = [f"p{i}@kunde.example;Person {i}\r\n" for i in range(300)]
    files = [
        ("E-Mail;Nachname\r\n" + "".join(rows[:200])).encode(),
        ("E-Mail;Nachname\r\n" + "".join(reversed(rows[100:]))).encode(),
    ]
    barrier = threading.Barrier(2)
    reports = []
    failures: list[BaseException] = []

    def run(data: bytes) -> None:
        try:
            with db.session_scope() as session:
                barrier.wait()
                reports.append(
                    import_contacts(
                        session, data, mapping=None, now=clock.now(), source="t", batch_size=50
                    )
                )
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(data,)) for data in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 300
        assert session.scalar(select(func.count(func.distinct(Contact.email)))) == 300
    assert all(report.errors == [] for report in reports)
    assert sum(report.created for report in reports) == 300

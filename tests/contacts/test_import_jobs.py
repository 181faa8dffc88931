from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts import import_jobs
from nurture.contacts.custom_fields import definitions
from nurture.contacts.importer import ImportFileError
from nurture.contacts.models import Contact, ImportJob
from nurture.db import Database
from nurture.events import Event
from nurture.worker import Worker
from tests.factories import make_contact, make_user

CONTACTS = (
    "E-Mail;Vorname;Nachname;Anrede\r\n"
    "anna@example.com;Anna;Müller;Frau\r\n"
    "kein-email;Bernd;Schulz;Herr\r\n"
    "clara@example.com;Clara;Weber;Frau\r\n"
    "\r\n"
    "dora@example.com;Dora;Zeh;Kaiserin\r\n"
).encode("cp1252")
MAPPING = {"E-Mail": "email", "Vorname": "first_name", "Nachname": "last_name", "Anrede": "gender"}


def _db(app: Flask) -> Database:
    return app.extensions["nurture"].db


def _job(session: Session, clock: FrozenClock, data: bytes = CONTACTS, kind: str = "contacts"):  # type: ignore[no-untyped-def]
    # No user: hashing a password per job would cost more than the import.
    job = import_jobs.create_job(
        session, kind=kind, filename="kunden.csv", data=data, user=None, now=clock.now()
    )
    session.commit()
    return job


def _reload(session: Session, job_id: int) -> ImportJob:
    session.expire_all()
    job = session.get(ImportJob, job_id)
    assert job is not None
    return job


def test_lifecycle_create_map_run(app: Flask, session: Session, clock: FrozenClock) -> None:
    user = make_user(session, clock)
    job = import_jobs.create_job(
        session, kind="contacts", filename="kunden.csv", data=CONTACTS, user=user, now=clock.now()
    )
    session.commit()
    assert job.created_by_id == user.id
    assert (job.state, job.mapping, job.rows_total) == ("queued", None, 4)
    assert import_jobs.awaiting_mapping(job)
    # Unmapped jobs wait for their mapping: the worker leaves them alone.
    assert import_jobs.run_next(_db(app), now_fn=clock.now) is None

    import_jobs.set_mapping(session, job, MAPPING | {"Anrede": ""}, definitions(session))
    session.commit()
    clock.advance(seconds=5)
    assert import_jobs.run_next(_db(app), now_fn=clock.now) == job.id

    job = _reload(session, job.id)
    assert job.state == "done"
    assert job.mapping == {"E-Mail": "email", "Vorname": "first_name", "Nachname": "last_name"}
    assert job.started_at == clock.now() and job.finished_at == clock.now()
    assert (job.rows_done, job.created, job.updated, job.unchanged, job.failed) == (4, 3, 0, 0, 1)
    assert job.problem == ""
    lines = job.errors_csv.removeprefix("\ufeff").splitlines()
    assert lines[0] == "line;field;message;E-Mail;Vorname;Nachname;Anrede"
    assert lines[1].startswith("3;email;email: ")
    assert [(e.line, e.field) for e in import_jobs.error_rows(job)] == [("3", "email")]
    names = session.scalars(select(Contact.first_name).order_by(Contact.email))
    assert list(names) == ["Anna", "Clara", "Dora"]
    assert import_jobs.progress(session, job.id) == {
        "id": job.id,
        "kind": "contacts",
        "state": "done",
        "finished": True,
        "rows_total": 4,
        "rows_done": 4,
        "percent": 100,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 1,
        "problem": "",
    }
    assert import_jobs.run_next(_db(app), now_fn=clock.now) is None


def test_the_mapping_is_checked_before_the_job_is_queued(
    session: Session, clock: FrozenClock
) -> None:
    job = _job(session, clock)
    fields = definitions(session)
    cases = [
        ({"Vorname": "first_name"}, "No column is mapped to the email address."),
        (
            {"E-Mail": "email", "Vorname": "last_name", "Nachname": "last_name"},
            "Two columns are mapped to last_name.",
        ),
        (
            {"E-Mail": "email", "Vorname": "custom.tier"},
            "The mapping names custom.tier, which is not a contact field to import.",
        ),
        (
            {"E-Mail": "email", "Ort": "city"},
            "The mapping names the column Ort, which the file does not have.",
        ),
    ]
    for mapping, message in cases:
        with pytest.raises(ImportFileError) as refused:
            import_jobs.set_mapping(session, job, mapping, fields)
        assert str(refused.value) == message
        assert _reload(session, job.id).mapping is None

    import_jobs.set_mapping(session, job, MAPPING, fields)
    session.commit()
    with pytest.raises(ImportFileError) as again:
        import_jobs.set_mapping(session, job, MAPPING, fields)
    assert str(again.value) == "This import is already queued; its mapping cannot change."


def test_an_unreadable_file_is_refused_at_upload(session: Session, clock: FrozenClock) -> None:
    for data, message in [
        ("E-Mail\r\nanna@example.com\r\n".encode("utf-16"), "neither UTF-8 nor Windows-1252"),
        (b"", "The file is empty."),
        (b"E-Mail;Vorname\r\n", "The file has a header but no data rows."),
    ]:
        with pytest.raises(ImportFileError) as refused:
            import_jobs.create_job(
                session, kind="contacts", filename="x.csv", data=data, user=None, now=clock.now()
            )
        assert message in str(refused.value)
    assert str(refused.value) == "The file has a header but no data rows."
    session.rollback()
    assert session.scalar(select(func.count()).select_from(ImportJob)) == 0


def test_a_stale_running_job_is_requeued_and_a_slow_worker_steps_back(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    job = _job(session, clock)
    import_jobs.set_mapping(session, job, MAPPING, definitions(session))
    session.commit()
    # A worker claimed it and died: the job stays running.
    dead_start = clock.now()
    session.execute(
        ImportJob.__table__.update()
        .where(ImportJob.id == job.id)
        .values(state="running", started_at=dead_start, rows_done=2)
    )
    session.commit()
    clock.advance(minutes=29)
    assert import_jobs.run_next(_db(app), now_fn=clock.now) is None
    assert _reload(session, job.id).state == "running"

    clock.advance(minutes=2)
    assert import_jobs.run_next(_db(app), now_fn=clock.now) == job.id
    done = _reload(session, job.id)
    assert (done.state, done.started_at, done.rows_done, done.created) == (
        "done",
        clock.now(),
        4,
        2,
    )

    # The "dead" worker was only slow: its next progress write finds the job taken over, so
    # it stops without touching the row.
    import_jobs.run_job(_db(app), job.id, started_at=dead_start, now_fn=clock.now)
    again = _reload(session, job.id)
    assert (again.state, again.started_at, again.created, again.unchanged) == (
        "done",
        clock.now(),
        2,
        0,
    )


def test_a_job_that_cannot_run_fails_with_its_problem(
    app: Flask, session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _job(session, clock, b"E-Mail;Art\r\nanna@example.com;order\r\n", kind="events")
    # A mapping that was valid at upload but no longer is when the worker gets to it.
    session.execute(
        ImportJob.__table__.update()
        .where(ImportJob.id == events.id)
        .values(mapping={"Art": "type"})
    )
    session.commit()
    assert import_jobs.run_next(_db(app), now_fn=clock.now) == events.id
    failed = _reload(session, events.id)
    assert failed.state == "failed" and failed.finished_at == clock.now()
    assert failed.problem == "No column is mapped to the email address or the customer number."

    broken = _job(session, clock)
    import_jobs.set_mapping(session, broken, MAPPING, definitions(session))
    session.commit()

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(import_jobs, "import_contacts", explode)
    with pytest.raises(RuntimeError):
        import_jobs.run_next(_db(app), now_fn=clock.now)
    crashed = _reload(session, broken.id)
    assert crashed.state == "failed"
    assert crashed.problem == import_jobs.INTERNAL_PROBLEM


def test_an_events_job_runs_through_the_worker_job(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    anna = make_contact(session, clock, email="anna@example.com", customer_number="K-7")
    session.commit()
    data = (
        "Kundennummer;Typ;Datum;Betrag;ID\r\n"
        "K-7;Bestellung;02.01.2026;49,90;B-1\r\n"
        "K-8;Bestellung;02.01.2026;10;B-2\r\n"
    ).encode("cp1252")
    job = _job(session, clock, data, kind="events")
    assert import_jobs.suggested_mapping(job, {}) == {
        "Kundennummer": "customer_number",
        "Typ": "type",
        "Datum": "occurred_at",
        "Betrag": "amount",
        "ID": "id",
    }
    with pytest.raises(ImportFileError) as refused:
        import_jobs.set_mapping(session, job, {"Kundennummer": "customer_number"}, {})
    assert str(refused.value) == "No column is mapped to the event type."
    import_jobs.set_mapping(session, job, import_jobs.suggested_mapping(job, {}), {})
    session.commit()

    Worker(app.extensions["nurture"], mode="embedded").run_job_now("imports")

    done = _reload(session, job.id)
    assert (done.state, done.created, done.unchanged, done.failed) == ("done", 1, 0, 1)
    assert [(e.line, e.field) for e in import_jobs.error_rows(done)] == [("3", "customer_number")]
    order = session.scalar(select(Event).where(Event.type == "order"))
    assert order is not None and order.contact_id == anna.id
    assert order.payload["amount"] == "49.90"


def test_purge_clears_old_files_and_abandoned_uploads(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    finished = _job(session, clock)
    import_jobs.set_mapping(session, finished, MAPPING, definitions(session))
    session.commit()
    import_jobs.run_next(_db(app), now_fn=clock.now)
    abandoned = _job(session, clock).id
    clock.advance(days=8)
    fresh = _job(session, clock).id

    assert import_jobs.purge_old_jobs(session, now=clock.now()) == 1
    session.commit()
    assert _reload(session, finished.id).data == CONTACTS
    assert session.get(ImportJob, abandoned) is None
    assert session.get(ImportJob, fresh) is not None

    clock.advance(timedelta(days=30))
    import_jobs.purge_old_jobs(session, now=clock.now())
    session.commit()
    kept = _reload(session, finished.id)
    assert kept.data == b"" and kept.created == 2 and kept.errors_csv

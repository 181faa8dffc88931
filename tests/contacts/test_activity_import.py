import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.cli import cli
from nurture.clock import FrozenClock
from nurture.contacts.activity_import import (
    import_activities,
    parse_amount,
    parse_time,
    suggest_event_mapping,
)
from nurture.contacts.importer import ImportFileError, ImportReport
from nurture.events import Event
from tests.factories import make_contact, make_user

# German Excel: ';', Windows-1252, German headers, type names and number formats. The clock
# stands at 2026-01-05 09:00 UTC; line 8 lies in the future also for the CLI's real clock.
CSV = (
    "Kundennummer;E-Mail;Art;Datum;Vorgangsnummer;Betrag;Währung;Grund;Schweregrad;Produkt;Notiz\r\n"
    "K-1;;Bestellung;02.01.2026 10:30;B-1;1.234,50;;;;;\r\n"
    ";Anna@Kunde.example;Beschwerde;2026-01-03T09:00:00Z;R-1;;;Lieferung zu spät;hoch;;\r\n"
    "K-1;;Kündigung;03.01.2026;K-9;;;Preis;;Premium-Abo;\r\n"
    ";niemand@kunde.example;Bestellung;02.01.2026;B-2;10,00;EUR;;;;\r\n"
    "K-1;;Bestellung;02.01.2026;B-3;zehn Euro;;;;;\r\n"
    "K-1;;Geschenk;02.01.2026;X-1;;;;;;\r\n"
    "K-1;;Anruf;01.02.2099 10:00;A-1;;;;;;Rückruf\r\n"
    ";anna@kunde.example;Notiz;04.01.2026 08:00;;;;;;;Mag Kaffee\r\n"
)


def _events(session: Session) -> list[Event]:
    session.expire_all()
    stmt = select(Event).where(Event.type != "contact_created").order_by(Event.id)
    return list(session.scalars(stmt))


def _contacts(session: Session, clock: FrozenClock) -> tuple[int, int]:
    bernd = make_contact(session, clock, email="bernd@kunde.example", customer_number="K-1")
    anna = make_contact(session, clock, email="anna@kunde.example")
    session.commit()
    return bernd.id, anna.id


def _run(session: Session, clock: FrozenClock, data: bytes) -> ImportReport:
    report = import_activities(session, data, mapping=None, now=clock.now(), source="import")
    session.commit()
    return report


def test_good_rows_are_recorded_on_the_right_contacts(session: Session, clock: FrozenClock) -> None:
    bernd, anna = _contacts(session, clock)
    report = _run(session, clock, CSV.encode("cp1252"))

    assert (report.rows, report.created, report.unchanged, report.updated) == (8, 4, 0, 0)
    recorded = [(e.type, e.contact_id, e.occurred_at, e.payload) for e in _events(session)]
    assert recorded == [
        (
            "order",
            bernd,
            datetime(2026, 1, 2, 9, 30, tzinfo=UTC),  # 10:30 in Berlin (CET)
            {"amount": "1234.50", "currency": "EUR", "source": "import"},
        ),
        (
            "complaint",
            anna,
            datetime(2026, 1, 3, 9, 0, tzinfo=UTC),
            {"reason": "Lieferung zu spät", "severity": "high", "source": "import"},
        ),
        (
            "cancellation",
            bernd,
            datetime(2026, 1, 2, 23, 0, tzinfo=UTC),  # a bare date is midnight in Berlin
            {"product": "Premium-Abo", "reason": "Preis", "source": "import"},
        ),
        (
            "note",
            anna,
            datetime(2026, 1, 4, 7, 0, tzinfo=UTC),
            {"text": "Mag Kaffee", "source": "import"},
        ),
    ]


def test_bad_rows_are_reported_with_line_numbers(session: Session, clock: FrozenClock) -> None:
    _contacts(session, clock)
    report = _run(session, clock, CSV.encode("cp1252"))

    assert [(e.line, e.field) for e in report.errors] == [
        (5, "email"),
        (6, "amount"),
        (7, "type"),
        (8, "occurred_at"),
    ]
    messages = [e.message for e in report.errors]
    assert messages[0] == "email: belongs to no contact; create the contact first"
    assert messages[1] == "amount: 'zehn Euro' is not an amount such as 1.234,50 or 1234.50"
    assert messages[2].startswith("type: must be one of order, complaint, cancellation")
    assert messages[3] == "occurred_at: lies in the future"
    assert report.errors[0].raw["E-Mail"] == "niemand@kunde.example"


def test_a_rerun_of_the_same_file_records_nothing_new(session: Session, clock: FrozenClock) -> None:
    _contacts(session, clock)
    _run(session, clock, CSV.encode("cp1252"))
    before = len(_events(session))

    clock.advance(hours=1)
    again = _run(session, clock, CSV.encode("cp1252"))

    assert (again.created, again.unchanged, len(again.errors)) == (0, 4, 4)
    assert len(_events(session)) == before


def test_unknown_customer_number_ragged_rows_and_batches(
    session: Session, clock: FrozenClock
) -> None:
    _contacts(session, clock)
    data = (
        b"customer_number;type;occurred_at;amount;currency\n"
        b"K-1;order;2026-01-01T12:00:00+01:00;19.90;usd\n"
        b"K-404;order;2026-01-01;5;EUR\n"
        b"K-1;order;2026-01-01;5;EUR;extra\n"
        b"K-1;call;2026-01-01;;\n"
    )
    seen: list[int] = []
    report = import_activities(
        session,
        data,
        mapping=None,
        now=clock.now(),
        source="import",
        batch_size=2,
        on_batch=lambda r: seen.append(r.rows),
    )
    assert seen == [2, 4]
    assert report.created == 1
    assert [(e.line, e.field, e.message) for e in report.errors] == [
        (3, "customer_number", "customer_number: belongs to no contact; create the contact first"),
        (4, None, "the row has 6 cells, the header 5"),
        (5, "text", "text: is required"),
    ]
    (order,) = _events(session)
    assert order.payload == {"amount": "19.90", "currency": "USD", "source": "import"}


def test_the_file_is_refused_without_contact_or_type_column(
    session: Session, clock: FrozenClock
) -> None:
    with pytest.raises(ImportFileError) as refused:
        import_activities(
            session, b"Art;Betrag\r\norder;1\r\n", mapping=None, now=clock.now(), source="x"
        )
    assert str(refused.value) == "No column is mapped to the email address or the customer number."
    with pytest.raises(ImportFileError) as no_type:
        import_activities(
            session, b"E-Mail;Betrag\r\na@b.de;1\r\n", mapping=None, now=clock.now(), source="x"
        )
    assert str(no_type.value) == "No column is mapped to the event type."
    with pytest.raises(ImportFileError) as bad:
        import_activities(
            session,
            b"E-Mail;Art\r\na@b.de;order\r\n",
            mapping={"E-Mail": "email", "Art": "kind"},
            now=clock.now(),
            source="x",
        )
    assert str(bad.value) == "The mapping names kind, which is not an event field to import."


def test_parsing_german_amounts_times_and_headers() -> None:
    assert parse_amount("1.234,50") == "1234.50"
    assert parse_amount("1.234") == "1234"
    assert parse_amount("19.90") == "19.90"
    assert parse_amount("19,9 €") == "19.9"
    with pytest.raises(ValueError):
        parse_amount("1,2,3")
    # Summer time: Berlin is UTC+2.
    assert parse_time("01.07.2025 12:00").astimezone(UTC) == datetime(2025, 7, 1, 10, tzinfo=UTC)
    assert parse_time("2025-07-01T12:00").astimezone(UTC) == datetime(2025, 7, 1, 10, tzinfo=UTC)
    assert parse_time("2025-07-01T12:00+00:00") == datetime(2025, 7, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time("31.02.2026")
    assert suggest_event_mapping(["E-Mail", "Ereignis", "Zeitpunkt", "Währung", "Egal"]) == {
        "E-Mail": "email",
        "Ereignis": "type",
        "Zeitpunkt": "occurred_at",
        "Währung": "currency",
    }


def test_cli_events_import_exit_codes(
    runner: CliRunner, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    _contacts(session, clock)
    source = tmp_path / "ereignisse.csv"
    source.write_bytes(CSV.encode("cp1252"))
    errors = tmp_path / "fehler.csv"

    result = runner.invoke(cli, ["events", "import", str(source), "--errors", str(errors)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "recorded 4 events, 0 already recorded, 4 errors"
    assert lines[1] == "line 5: email: belongs to no contact; create the contact first"
    assert errors.read_text(encoding="utf-8-sig").splitlines()[1].startswith("5;email;")

    good = tmp_path / "gut.csv"
    good.write_text("E-Mail;Typ;Text\r\nanna@kunde.example;Notiz;Hallo\r\n", encoding="utf-8")
    args = ["events", "import", str(good), "--map", "E-Mail=email", "--map", "Typ=type"]
    args += ["--map", "Text=text"]
    ok = runner.invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines() == ["recorded 1 events, 0 already recorded, 0 errors"]

    refused = runner.invoke(cli, ["events", "import", str(good), "--map", "E-Mail=email"])
    assert refused.exit_code == 2
    assert "No column is mapped to the event type." in refused.output


def test_api_events_import_returns_the_report(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _contacts(session, clock)
    user = make_user(session, clock, role=Role.MARKETER)
    _token, raw = create_token(session, user, "erp", now=clock.now())
    session.commit()
    auth = {"Authorization": f"Bearer {raw}"}

    response = client.post(
        "/api/v1/events/import",
        headers=auth,
        data={"file": (io.BytesIO(CSV.encode("cp1252")), "ereignisse.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body is not None
    assert (body["rows"], body["created"], body["unchanged"]) == (8, 4, 0)
    assert [(e["line"], e["field"]) for e in body["errors"]] == [
        (5, "email"),
        (6, "amount"),
        (7, "type"),
        (8, "occurred_at"),
    ]
    csv_only = client.post(
        "/api/v1/events/import",
        headers=auth | {"Content-Type": "text/csv"},
        data=CSV.encode("cp1252"),
    )
    assert csv_only.status_code == 200
    assert csv_only.json is not None and csv_only.json["unchanged"] == 4
    refused = client.post(
        "/api/v1/events/import",
        headers=auth | {"Content-Type": "text/csv"},
        data=b"Art\r\norder\r\n",
    )
    assert refused.status_code == 422
    assert refused.json is not None and refused.json["error"]["code"] == "invalid_file"
    count = select(func.count()).select_from(Event).where(Event.type != "contact_created")
    assert session.scalar(count) == 4

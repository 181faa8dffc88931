from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.contacts.importer import ImportFileError, errors_csv, import_contacts
from nurture.contacts.models import Contact

# Line 2-3 is one record (a quoted newline), so every later row starts one line further down.
MIXED = (
    "E-Mail;Vorname;Nachname;Anrede;Geburtstag;Firma\r\n"
    'anna@example.com;Anna;Müller;Frau;31.12.1980;"Beispiel GmbH\r\nEinkauf"\r\n'
    "kein-email;=HYPERLINK(1);Bauer;Herr;;\r\n"
    "bernd@example.com;Bernd;Schulz;Herr;1975-04-01;\r\n"
    "clara@example.com;Clara;Wolf;Frau;31.02.2020;\r\n"
    "dora@example.com;Dora;Klein;Hoheit;;\r\n"
    "emil@example.com;Emil;Groß;Herr;;X;zu viel\r\n"
    "fritz@example.com;Fritz;Lang;Herr;\r\n"
    "gina@example.com;Gina;Roth;Frau;;\r\n"
)


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)) or 0


def _import(session: Session, clock: FrozenClock, data: bytes, mapping=None):  # type: ignore[no-untyped-def]
    report = import_contacts(session, data, mapping=mapping, now=clock.now(), source="test")
    session.commit()
    return report


def test_windows_1252_semicolon_file_from_german_excel(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    data = (
        "E-Mail;Vorname;Nachname;Anrede;Geburtstag;Kundennummer;Du/Sie;Notiz\r\n"
        "Anna.Mueller@Example.com;Anna;Müller;Frau;31.12.1980;K-1;Du;egal\r\n"
        "joerg@example.com;Jörg;Weiß;Herr;;K-2;Sie;\r\n"
    ).encode("cp1252")
    assert b"M\xfcller" in data
    report = _import(session, clock, data)
    assert (report.rows, report.created, report.errors) == (2, 2, [])
    assert report.ignored_columns == ["Notiz"]
    anna = session.scalar(select(Contact).where(Contact.customer_number == "K-1"))
    assert anna is not None
    assert (anna.email, anna.last_name, anna.gender, anna.birthday, anna.formality) == (
        "anna.mueller@example.com",
        "Müller",
        "female",
        date(1980, 12, 31),
        "informal",
    )
    assert session.scalar(select(Contact.last_name).where(Contact.first_name == "Jörg")) == "Weiß"


def test_utf8_with_bom_comma_file(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    data = (
        "\ufeffEmail,First name,Last name,Tags,Birthday\n"
        'ozan@example.com,Ozan,Öztürk,"VIP|Newsletter",1990-05-17\n'
    ).encode()
    report = _import(session, clock, data)
    assert (report.created, report.errors) == (1, [])
    contact = session.scalar(select(Contact))
    assert contact is not None
    assert (contact.first_name, contact.last_name, contact.tags, contact.birthday) == (
        "Ozan",
        "Öztürk",
        ["newsletter", "vip"],
        date(1990, 5, 17),
    )


def test_bad_rows_are_reported_by_physical_line_and_good_rows_import(session, clock) -> None:  # type: ignore[no-untyped-def]
    report = _import(session, clock, MIXED.encode())
    assert [(e.line, e.field) for e in report.errors] == [
        (4, "email"),
        (6, "birthday"),
        (7, "gender"),
        (8, None),
        (9, None),
    ]
    assert report.errors[0].message.startswith("email: ")
    assert report.errors[1].message == (
        "birthday: '31.02.2020' is not a date as DD.MM.YYYY or YYYY-MM-DD"
    )
    assert "7 cells" in report.errors[3].message and "5 cells" in report.errors[4].message
    assert (report.rows, report.created, report.updated, report.unchanged) == (8, 3, 0, 0)
    rows = session.execute(select(Contact.email, Contact.company).order_by(Contact.email)).all()
    assert [tuple(r) for r in rows] == [
        ("anna@example.com", "Beispiel GmbH Einkauf"),
        ("bernd@example.com", ""),
        ("gina@example.com", ""),
    ]


def test_importing_the_same_file_again_changes_nothing(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    # A duplicate row in the file is just a second upsert of the same person.
    data = (MIXED + "gina@example.com;Gina;Roth;Frau;;\r\n").encode()
    first = _import(session, clock, data)
    assert (first.created, first.updated, first.unchanged) == (3, 0, 1)
    second = _import(session, clock, data)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 4)
    assert [e.line for e in second.errors] == [e.line for e in first.errors]
    assert _count(session) == 3
    clock.advance(hours=1)
    changed = (MIXED.replace("Bernd;Schulz", "Bernd;Schulze")).encode()
    third = _import(session, clock, changed)
    assert (third.created, third.updated, third.unchanged) == (0, 1, 2)


def test_a_wrong_mapping_or_no_email_column_is_refused_before_any_row(session, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImportFileError, match="not a contact field"):
        _import(session, clock, MIXED.encode(), mapping={"E-Mail": "email", "Vorname": "vorname"})
    with pytest.raises(ImportFileError, match="No column is mapped to the email address"):
        _import(session, clock, "Vorname;Nachname\r\nAnna;Müller\r\n".encode())
    assert _count(session) == 0


def test_the_caller_commits(session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    # One savepoint per row must not commit rows on their own (pysqlite would, unguarded).
    import_contacts(session, MIXED.encode(), mapping=None, now=clock.now(), source="test")
    session.rollback()
    assert _count(session) == 0


def test_errors_csv_neutralises_formulas_and_names_lines(session, clock) -> None:  # type: ignore[no-untyped-def]
    output = errors_csv(_import(session, clock, MIXED.encode()))
    lines = output.splitlines()
    assert lines[0] == "\ufeffline;field;message;E-Mail;Vorname;Nachname;Anrede;Geburtstag;Firma"
    assert lines[1].startswith("4;email;email: ")
    assert lines[1].endswith(";kein-email;'=HYPERLINK(1);Bauer;Herr;;")
    assert [line.split(";")[0] for line in lines[1:]] == ["4", "6", "7", "8", "9"]
    assert lines[4].endswith(";emil@example.com;Emil;Groß;Herr;;X;zu viel")


def test_a_comma_file_with_a_ragged_row_is_still_read_as_comma_separated(session, clock) -> None:  # type: ignore[no-untyped-def]
    data = b"Email,Last name\nanna@example.com,Meyer\nbernd@example.com,Schulz,extra\n"
    report = _import(session, clock, data)
    assert report.created == 1
    assert [(e.line, e.message) for e in report.errors] == [
        (3, "the row has 3 cells, the header 2")
    ]

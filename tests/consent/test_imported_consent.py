"""Consent that comes with an import: only with a proof reference, recorded as ``imported``."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from nurture.cli import cli
from nurture.clock import FrozenClock
from nurture.consent import gate
from nurture.consent.imported import (
    ConsentImport,
    ConsentProof,
    ConsentProofError,
    parse_proof,
)
from nurture.consent.ledger import Origin, record
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentState,
    ConsentText,
    TopicKind,
)
from nurture.contacts.importer import ImportFileError, ImportReport, import_contacts
from nurture.contacts.models import Contact
from nurture.mail import outbox
from nurture.mail.models import Purpose
from tests.conftest import login
from tests.contacts.test_api import _auth
from tests.factories import PASSWORD, grant_consent, make_contact, make_topic, make_user

# The FrozenClock starts 2026-01-05 09:00 UTC.
TEXT = "Ja, ich möchte den Newsletter und Angebote der Beispiel GmbH per E-Mail erhalten."
SHA = hashlib.sha256(f"de\n{TEXT}".encode()).hexdigest()
CSV = (
    b"E-Mail;Vorname;Einwilligung\r\n"
    b"anna@example.com;Anna;ja\r\n"
    b"bernd@example.com;Bernd;nein\r\n"
    b"clara@example.com;Clara;X\r\n"
    b"dora@example.com;Dora;\r\n"
)
MAPPING = {"E-Mail": "email", "Vorname": "first_name", "Einwilligung": "consent"}
NEEDS_PROOF = (
    "A column is mapped to consent, but consent needs a proof reference: where, when and with "
    "which text it was collected."
)


def _proof(**changes: object) -> ConsentProof:
    fields: dict[str, object] = {
        "topics": ("news", "offers"),
        "source": "Messe-Formular Köln 2025",
        "collected_on": date(2025, 12, 1),
        "text": TEXT,
    }
    return ConsentProof(**(fields | changes))  # type: ignore[arg-type]


def _topics(session: Session, clock: FrozenClock) -> None:
    make_topic(session, clock, "news", name="Newsletter")
    make_topic(session, clock, "offers", name="Angebote")
    make_topic(session, clock, "tracking", name="Tracking", kind=TopicKind.TRACKING)
    session.commit()


def _import(
    session: Session,
    clock: FrozenClock,
    proof: ConsentProof | None,
    data: bytes = CSV,
    mapping: dict[str, str] | None = MAPPING,
    **kwargs: object,
) -> ImportReport:
    extension = (
        ConsentImport(session, proof, reference="kunden.csv", file="kunden.csv", now=clock.now())
        if proof is not None
        else None
    )
    report = import_contacts(
        session,
        data,
        mapping=mapping,
        now=clock.now(),
        source="import",
        extension=extension,
        **kwargs,  # type: ignore[arg-type]
    )
    session.commit()
    return report


def _contact(session: Session, email: str) -> Contact:
    return session.scalars(select(Contact).where(Contact.email == email)).one()


def _entries(session: Session) -> list[ConsentEntry]:
    return list(session.scalars(select(ConsentEntry).order_by(ConsentEntry.id)))


def _gate(app: Flask, session: Session, clock: FrozenClock, email: str) -> str | None:
    """What the send gate says about a marketing mail on "news" to ``email``."""
    contact = _contact(session, email)
    message = outbox.enqueue(
        session,
        key=f"m:{email}:{clock.now().isoformat()}",
        purpose=Purpose.MARKETING,
        to_addr=email,
        context={},
        builtin="optin_confirmation",
        contact_id=contact.id,
        topic="news",
        now=clock.now(),
    )
    assert message is not None
    return gate.check(session, message, clock.now(), app.extensions["nurture"].settings)


def test_rows_that_say_yes_get_imported_consent_with_the_proof_as_evidence(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    report = _import(session, clock, _proof())
    assert (report.created, report.errors) == (4, [])
    # Anna (ja) and Clara (X), two topics each; Bernd (nein) and Dora (empty) nothing.
    assert (report.consents_imported, report.consents_skipped, report.notes) == (4, 0, [])

    entries = _entries(session)
    anna, clara = _contact(session, "anna@example.com"), _contact(session, "clara@example.com")
    assert [(e.contact_id, e.action) for e in entries] == [
        (anna.id, Action.IMPORTED),
        (anna.id, Action.IMPORTED),
        (clara.id, Action.IMPORTED),
        (clara.id, Action.IMPORTED),
    ]
    first = entries[0]
    assert first.source == "import:kunden.csv"
    assert first.at == clock.now()
    assert first.text_hash == SHA
    assert first.ip is None and first.user_agent is None
    assert first.evidence == {
        "source": "Messe-Formular Köln 2025",
        "date": "2025-12-01",
        "text_version": SHA,
        "file": "kunden.csv",
        "line": 2,
    }
    assert entries[2].evidence["line"] == 4
    text = session.get(ConsentText, first.text_id)
    assert text is not None and text.text == TEXT and text.sha256 == SHA

    state = session.get(Consent, (anna.id, first.topic_id))
    assert state is not None and state.state is ConsentState.GRANTED
    # The consent counts from the proof date (midnight in Berlin), not from the import.
    assert state.granted_at == datetime(2025, 11, 30, 23, 0, tzinfo=UTC)

    assert _gate(app, session, clock, "anna@example.com") is None
    assert _gate(app, session, clock, "clara@example.com") is None
    assert _gate(app, session, clock, "bernd@example.com") == "no_consent"
    assert _gate(app, session, clock, "dora@example.com") == "no_consent"


def test_without_a_proof_a_consent_column_refuses_the_whole_file(
    session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    with pytest.raises(ImportFileError) as refused:
        _import(session, clock, None)
    assert str(refused.value) == NEEDS_PROOF
    assert session.scalar(select(func.count()).select_from(Contact)) == 0

    # Without the consent column the same file imports, and nobody gets consent.
    plain = {"E-Mail": "email", "Vorname": "first_name"}
    report = _import(session, clock, None, mapping=plain)
    assert (report.created, report.consents_imported) == (4, 0)
    assert report.ignored_columns == ["Einwilligung"]
    assert _entries(session) == []
    # Auto-mapping never picks the consent column without a proof.
    assert _import(session, clock, None, mapping=None).consents_imported == 0
    assert _entries(session) == []


def test_a_proof_needs_a_consent_column_or_the_explicit_all_rows(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    plain = {"E-Mail": "email", "Vorname": "first_name"}
    with pytest.raises(ConsentProofError) as refused:
        _import(session, clock, _proof(), mapping=plain)
    assert str(refused.value) == (
        "Map the column that says whether each person consented, or declare that every row "
        "of the file consented."
    )
    with pytest.raises(ConsentProofError) as both:
        _import(session, clock, _proof(all_rows=True))
    assert str(both.value).startswith("Either map the column")
    assert session.scalar(select(func.count()).select_from(Contact)) == 0

    report = _import(session, clock, _proof(topics=("news",), all_rows=True), mapping=plain)
    assert (report.created, report.consents_imported) == (4, 4)
    assert _gate(app, session, clock, "dora@example.com") is None

    # With a proof and no mapping, a header that names consent is read as the consent column.
    session.execute(ConsentEntry.__table__.delete())
    session.execute(Consent.__table__.delete())
    session.commit()
    auto = _import(session, clock, _proof(topics=("news",)), mapping=None)
    assert auto.consents_imported == 2


def test_a_re_import_changes_nothing(session: Session, clock: FrozenClock) -> None:
    _topics(session, clock)
    _import(session, clock, _proof())
    before = [(e.id, e.contact_id, e.topic_id) for e in _entries(session)]
    clock.advance(days=1)
    again = _import(session, clock, _proof())
    assert (again.consents_imported, again.consents_skipped, again.notes) == (0, 4, [])
    assert [(e.id, e.contact_id, e.topic_id) for e in _entries(session)] == before


def test_a_withdrawal_after_the_proof_date_wins_one_before_it_does_not(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    _import(session, clock, _proof(topics=("news",)))
    anna, clara = _contact(session, "anna@example.com"), _contact(session, "clara@example.com")
    news = make_topic(session, clock, "news")
    clock.advance(hours=2)
    # Anna withdrew after the proof date (today); Clara before it (in the summer).
    record(
        session,
        contact_id=anna.id,
        topic=news,
        action=Action.WITHDRAWN,
        origin=Origin(source="link"),
        now=clock.now(),
    )
    record(
        session,
        contact_id=clara.id,
        topic=news,
        action=Action.WITHDRAWN,
        origin=Origin(source="link"),
        now=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
    )
    session.commit()
    clock.advance(days=1)

    report = _import(session, clock, _proof())
    assert report.errors == []
    # Anna: news refused (withdrawn), offers recorded; Clara: both recorded.
    assert (report.consents_imported, report.consents_skipped) == (3, 1)
    assert [(n.line, n.message) for n in report.notes] == [
        (2, "consent not imported: withdrawn on 2026-01-05 (news)")
    ]
    assert session.get(Consent, (anna.id, news.id)).state is ConsentState.NONE  # type: ignore[union-attr]
    assert session.get(Consent, (clara.id, news.id)).state is ConsentState.GRANTED  # type: ignore[union-attr]
    assert _gate(app, session, clock, "anna@example.com") == "no_consent"
    # Counted the same way on every re-run, never restored.
    rerun = _import(session, clock, _proof())
    assert (rerun.consents_imported, rerun.consents_skipped, len(rerun.notes)) == (0, 4, 1)


def test_an_old_proof_lapses_like_any_old_consent(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    _import(session, clock, _proof(collected_on=date(2023, 1, 4)))
    # 24 months of dormancy by default: consent from 2023-01-04 lapsed on 2025-01-04.
    assert _gate(app, session, clock, "anna@example.com") == "consent_dormant"


def test_bad_cells_are_row_errors_and_every_batch_and_repeat_is_handled(
    session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    data = (
        b"email,consent\n"
        b"a@example.com,yes\n"
        b"b@example.com,vielleicht\n"
        b"c@example.com,1\n"
        b"a@example.com,true\n"
        b"d@example.com,no\n"
        b"e@example.com,TRUE\n"
    )
    report = _import(
        session, clock, _proof(topics=("news",)), data=data, mapping=None, batch_size=2
    )
    assert [(e.line, e.field, e.message) for e in report.errors] == [
        (3, "consent", "consent: 'vielleicht' is not yes or no (ja/nein, yes/no, 1/0, x or empty)")
    ]
    # a twice (once skipped), c and e.
    assert (report.consents_imported, report.consents_skipped) == (3, 1)
    assert len(_entries(session)) == 3


def test_a_consent_written_meanwhile_sends_the_batch_down_the_careful_path(
    app: Flask, session: Session, clock: FrozenClock, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer: nobody can write between the import's statements")
    _topics(session, clock)
    anna = make_contact(session, clock, email="anna@example.com")
    session.commit()
    db = app.extensions["nurture"].db
    done: list[bool] = []

    def meanwhile(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        # Anna confirms a double opt-in for news right between the import's state query and
        # its bulk insert of states.
        if not done and statement.startswith("INSERT INTO consents"):
            done.append(True)
            with db.session_scope() as other:
                grant_consent(other, clock, other.get(Contact, anna.id), "news")  # type: ignore[arg-type]

    event.listen(db.engine, "before_cursor_execute", meanwhile)
    try:
        report = _import(session, clock, _proof())
    finally:
        event.remove(db.engine, "before_cursor_execute", meanwhile)
    assert done == [True]
    assert report.errors == []
    assert (report.created, report.updated + report.unchanged) == (3, 1)
    assert (report.consents_imported, report.consents_skipped) == (3, 1)
    actions = [(e.contact_id, e.action) for e in _entries(session)]
    clara = _contact(session, "clara@example.com")
    assert actions == [
        (anna.id, Action.CONFIRMED),
        (anna.id, Action.IMPORTED),
        (clara.id, Action.IMPORTED),
        (clara.id, Action.IMPORTED),
    ]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"topics": ()}, "topics", "Choose the topics the contacts consented to."),
        ({"topics": ("news", "nope")}, "topics", "There is no topic nope."),
        ({"topics": ("tracking",)}, "topics", "Consent to open and click tracking cannot"),
        ({"source": ""}, "source", "Name where the consent was collected"),
        ({"text": ""}, "text", "The consent text the people agreed to is required"),
        (
            {"collected_on": date(2026, 1, 6)},
            "date",
            "The date on which the consent was collected lies in the future.",
        ),
        ({"language": "fr"}, "language", "The language of the consent text must be one of"),
    ],
)
def test_a_proof_that_is_no_proof_is_refused_before_any_row(
    session: Session, clock: FrozenClock, changes: dict[str, object], field: str, message: str
) -> None:
    _topics(session, clock)
    with pytest.raises(ConsentProofError) as refused:
        _import(session, clock, _proof(**changes))
    assert refused.value.field == field
    assert str(refused.value).startswith(message)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_parse_proof_reads_form_input() -> None:
    proof = parse_proof(
        topics=" news, offers ,news,",
        source="  Messe   Köln ",
        collected_on="01.12.2025",
        text=f"\n{TEXT}\n",
        all_rows=True,
    )
    assert proof == ConsentProof(
        topics=("news", "offers"),
        source="Messe Köln",
        collected_on=date(2025, 12, 1),
        text=TEXT,
        all_rows=True,
    )
    assert ConsentProof.from_json(proof.to_json()) == proof
    with pytest.raises(ConsentProofError, match="is not a date"):
        parse_proof(topics="news", source="x", collected_on="31.02.2025", text="t")


def test_cli_imports_consent_with_a_proof_and_refuses_it_without(
    runner: CliRunner, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    _topics(session, clock)
    source = tmp_path / "messe.csv"
    source.write_bytes(CSV)
    text = tmp_path / "text.txt"
    text.write_text(TEXT + "\n", encoding="utf-8")
    maps = ["--map", "E-Mail=email", "--map", "Einwilligung=consent"]

    refused = runner.invoke(cli, ["contacts", "import", str(source), *maps])
    assert refused.exit_code == 2
    assert f"nothing imported: {NEEDS_PROOF}" in refused.output

    args = [
        "contacts",
        "import",
        str(source),
        *maps,
        "--consent-topic",
        "news",
        "--consent-source",
        "Messe-Formular Köln 2025",
        "--consent-date",
        "2025-12-01",
        "--consent-text-file",
        str(text),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "imported 4 rows: 4 created, 0 updated, 0 unchanged, 0 errors",
        "consent: 2 recorded, 0 skipped",
    ]
    entries = _entries(session)
    assert [e.source for e in entries] == ["import:messe.csv"] * 2
    assert entries[0].text_hash == SHA
    assert entries[0].evidence["file"] == "messe.csv"

    future = runner.invoke(cli, [*args[:-4], "--consent-date", "2099-01-01", *args[-2:]])
    assert future.exit_code == 2
    assert "lies in the future" in future.output


def test_api_imports_consent_with_a_proof_and_shows_it_in_the_ledger_api(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    auth = _auth(session, clock)

    def post(**fields: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/api/v1/contacts/import",
            headers=auth,
            data={
                "file": (io.BytesIO(CSV), "messe.csv"),
                "mapping": '{"E-Mail": "email", "Einwilligung": "consent"}',
                **fields,
            },
            content_type="multipart/form-data",
        )

    refused = post()
    assert refused.status_code == 422
    assert refused.json["error"] == {  # type: ignore[index]
        "code": "invalid_file",
        "message": NEEDS_PROOF,
        "details": {},
    }
    unknown = post(consent_topics="news,nope", consent_source="x", consent_date="2025-12-01")
    assert unknown.status_code == 422
    assert unknown.json["error"]["code"] == "invalid_consent_proof"  # type: ignore[index]
    assert unknown.json["error"]["details"] == {"topics": "There is no topic nope."}  # type: ignore[index]

    proof = {
        "consent_topics": "news, offers",
        "consent_source": "Messe-Formular Köln 2025",
        "consent_date": "01.12.2025",
        "consent_text": TEXT,
    }
    response = post(**proof)
    assert response.status_code == 200, response.json
    body = response.json
    assert body is not None
    assert (body["created"], body["consents_imported"], body["consents_skipped"]) == (4, 4, 0)
    assert body["notes"] == []
    again = post(**proof).json
    assert again is not None and (again["consents_imported"], again["consents_skipped"]) == (0, 4)

    anna = _contact(session, "anna@example.com")
    ledger = client.get(f"/api/v1/contacts/{anna.id}/consents", headers=auth).json
    assert ledger is not None
    assert [(e["topic"], e["action"], e["source"]) for e in ledger["ledger"]] == [
        ("news", "imported", "import:messe.csv"),
        ("offers", "imported", "import:messe.csv"),
    ]
    evidence = ledger["ledger"][0]["evidence"]
    assert evidence["source"] == "Messe-Formular Köln 2025"
    assert evidence["date"] == "2025-12-01"
    assert evidence["text_version"] == SHA == ledger["ledger"][0]["text_hash"]
    assert evidence["line"] == 2 and evidence["file"] == "messe.csv"
    assert evidence["declared_by"].startswith("user:")
    assert ledger["current"]["news"]["state"] == "granted"
    assert ledger["current"]["news"]["granted_at"] == "2025-11-30T23:00:00Z"


def test_the_proof_page_shows_source_date_and_text_of_an_imported_consent(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _topics(session, clock)
    _import(session, clock, _proof(topics=("news",)))
    anna = _contact(session, "anna@example.com")
    user = make_user(session, clock)
    assert login(client, user.email, PASSWORD).status_code == 302
    page = client.get(f"/contacts/{anna.id}/consent-proof")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Imported with proof" in html
    assert "<code>import:kunden.csv</code>" in html
    assert "Messe-Formular Köln 2025" in html
    assert "2025-12-01" in html
    assert TEXT in html and SHA in html

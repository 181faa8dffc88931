import io
from pathlib import Path

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.cli import cli
from nurture.contacts.models import Contact
from tests.contacts.test_api import _auth

CSV = (
    "E-Mail;Vorname;Anrede\r\n"
    "anna@example.com;Anna;Frau\r\n"
    "kein-email;Bernd;Herr\r\n"
    "clara@example.com;Clara;Frau\r\n"
)


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)) or 0


def test_cli_import_prints_the_summary_and_exits_1_on_failed_rows(
    runner: CliRunner, session: Session, tmp_path: Path
) -> None:
    source = tmp_path / "kontakte.csv"
    source.write_bytes(CSV.encode("cp1252"))
    errors = tmp_path / "fehler.csv"
    args = ["contacts", "import", str(source), "--map", "E-Mail=email", "--errors", str(errors)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "imported 2 rows: 2 created, 0 updated, 0 unchanged, 1 errors"
    assert lines[1].startswith("line 3: email: ")
    assert errors.read_text(encoding="utf-8-sig").splitlines()[1].startswith("3;email;")
    # Only E-Mail was mapped: the good rows are committed without the other columns.
    assert _count(session) == 2
    assert (
        session.scalar(select(Contact.first_name).where(Contact.email == "anna@example.com")) == ""
    )

    again = runner.invoke(cli, ["contacts", "import", str(source)])
    assert again.stdout.splitlines()[0] == (
        "imported 2 rows: 0 created, 2 updated, 0 unchanged, 1 errors"
    )
    source.write_text("Vorname\r\nAnna\r\n")
    refused = runner.invoke(cli, ["contacts", "import", str(source)])
    assert refused.exit_code == 2
    assert "No column is mapped to the email address." in refused.output


def test_api_import_multipart_returns_the_report(client: FlaskClient, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    response = client.post(
        "/api/v1/contacts/import",
        headers=auth,
        data={
            "file": (io.BytesIO(CSV.encode()), "kontakte.csv"),
            "mapping": '{"E-Mail": "email", "Vorname": "first_name"}',
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body is not None
    assert {k: body[k] for k in ("rows", "created", "updated", "unchanged")} == {
        "rows": 3,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
    }
    assert body["ignored_columns"] == ["Anrede"]
    assert [(e["line"], e["field"]) for e in body["errors"]] == [(3, "email")]
    assert _count(session) == 2

    no_email = client.post(
        "/api/v1/contacts/import",
        headers=auth,
        data={"file": (io.BytesIO(b"Vorname;Nachname\r\nAnna;M\r\n"), "x.csv")},
        content_type="multipart/form-data",
    )
    assert no_email.status_code == 422
    assert no_email.json["error"]["code"] == "invalid_file"  # type: ignore[index]
    assert no_email.json["error"]["message"] == "No column is mapped to the email address."  # type: ignore[index]


def test_api_import_takes_text_csv_and_refuses_sales(client: FlaskClient, session, clock) -> None:  # type: ignore[no-untyped-def]
    raw = client.post(
        "/api/v1/contacts/import",
        headers=_auth(session, clock) | {"Content-Type": "text/csv"},
        data=CSV.encode("cp1252"),
    )
    assert raw.status_code == 200 and raw.json["created"] == 2  # type: ignore[index]
    sales = client.post(
        "/api/v1/contacts/import",
        headers=_auth(session, clock, Role.SALES) | {"Content-Type": "text/csv"},
        data=CSV.encode(),
    )
    assert sales.status_code == 403

import csv
import io
import re

from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.contacts import import_jobs
from nurture.contacts.models import Contact, ImportJob
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_user

# As German Excel saves it: ';', Windows-1252, German headers, umlauts. Lines 3 and 6 fail.
CSV = (
    "E-Mail;Vorname;Nachname;Stadt;Lieblingsfarbe\r\n"
    "anna@example.com;Anna;Müller;München;grün\r\n"
    "kein-email;Bernd;Schäfer;Köln;blau\r\n"
    "clara@example.com;Clara;Weiß;Düsseldorf;rot\r\n"
    "dora@example.com;Dora;Öztürk;Nürnberg;gelb\r\n"
    "emil@example;Emil;Groß;Essen;grau\r\n"
).encode("cp1252")


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> None:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302


def _upload(client: FlaskClient, data: bytes, kind: str = "contacts"):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get("/contacts/imports").get_data(as_text=True))
    return client.post(
        "/contacts/imports",
        data={"csrf_token": token, "kind": kind, "file": (io.BytesIO(data), "kunden.csv")},
        content_type="multipart/form-data",
    )


def _job_id(location: str, suffix: str = "/map") -> int:
    match = re.fullmatch(r"/contacts/imports/(\d+)" + re.escape(suffix), location)
    assert match, location
    return int(match.group(1))


def _selected(html: str, index: int) -> str | None:
    select_html = re.search(rf'<select[^>]*name="column-{index}".*?</select>', html, re.S)
    assert select_html, f"no select for column {index}"
    chosen = re.search(r'<option value="([^"]*)" selected>', select_html.group(0))
    return chosen.group(1) if chosen else None


def test_the_wizard_uploads_maps_runs_and_reports(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    listing = client.get("/contacts/imports")
    assert listing.status_code == 200
    assert 'enctype="multipart/form-data"' in listing.get_data(as_text=True)

    uploaded = _upload(client, CSV)
    assert uploaded.status_code == 302
    job_id = _job_id(uploaded.headers["Location"])

    page = client.get(f"/contacts/imports/{job_id}/map")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for header in ("E-Mail", "Vorname", "Nachname", "Stadt", "Lieblingsfarbe"):
        assert f">{header}<" in html.replace("\n", "").replace("  ", "")
    # Three sample values per column, from the first rows, decoded from Windows-1252.
    for sample in ("Müller", "Schäfer", "Weiß", "München", "Köln", "Düsseldorf"):
        assert f"<li>{sample}</li>" in html
    assert "Öztürk" not in html
    assert [_selected(html, i) for i in range(5)] == [
        "email",
        "first_name",
        "last_name",
        "city",
        "",
    ]
    assert "An import never creates consent" in html

    token = csrf_token(html)
    mapping = {"column-0": "email", "column-1": "first_name", "column-2": "last_name"}
    mapped = client.post(
        f"/contacts/imports/{job_id}/map",
        data=mapping | {"column-3": "city", "column-4": "", "csrf_token": token},
    )
    assert mapped.status_code == 302
    assert _job_id(mapped.headers["Location"], "") == job_id

    waiting = client.get(f"/contacts/imports/{job_id}")
    waiting_html = waiting.get_data(as_text=True)
    assert '<progress id="import-bar"' in waiting_html
    assert 'max="5" value="0"' in waiting_html
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in waiting_html
    assert "js/import-progress.js" in waiting_html
    assert client.get(f"/contacts/imports/{job_id}/progress.json").json == {
        "id": job_id,
        "kind": "contacts",
        "state": "queued",
        "finished": False,
        "rows_total": 5,
        "rows_done": 0,
        "percent": 0,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "failed": 0,
        "problem": "",
    }
    # A queued job's mapping is fixed: the mapping page leads to the progress page.
    assert client.get(f"/contacts/imports/{job_id}/map").headers["Location"] == (
        f"/contacts/imports/{job_id}"
    )

    assert import_jobs.run_next(app.extensions["nurture"].db, now_fn=clock.now) == job_id

    detail = client.get(f"/contacts/imports/{job_id}")
    assert detail.status_code == 200
    text = detail.get_data(as_text=True)
    assert "http-equiv" not in text and "import-progress.js" not in text
    assert "5 rows read: 3 created, 0 updated, 0 unchanged, 2 failed." in text
    rows = re.findall(
        r'<tr>\s*<th scope="row" class="num">(\d+)</th>\s*<td><code>(\w+)</code></td>', text
    )
    assert rows == [("3", "email"), ("6", "email")]
    assert f'href="/contacts/imports/{job_id}/errors.csv"' in text
    cities = session.scalars(select(Contact.city).order_by(Contact.email))
    assert list(cities) == ["München", "Düsseldorf", "Nürnberg"]

    download = client.get(f"/contacts/imports/{job_id}/errors.csv")
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    report = list(
        csv.reader(io.StringIO(download.get_data(as_text=True).lstrip("\ufeff")), delimiter=";")
    )
    assert report[0][:3] == ["line", "field", "message"]
    assert [(r[0], r[1], r[3], r[5]) for r in report[1:]] == [
        ("3", "email", "kein-email", "Schäfer"),
        ("6", "email", "emil@example", "Groß"),
    ]

    assert client.get(f"/contacts/imports/{job_id}/progress.json").json == {
        "id": job_id,
        "kind": "contacts",
        "state": "done",
        "finished": True,
        "rows_total": 5,
        "rows_done": 5,
        "percent": 100,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 2,
        "problem": "",
    }
    listing_html = client.get("/contacts/imports").get_data(as_text=True)
    assert f'id="import-job-{job_id}"' in listing_html and "kunden.csv" in listing_html


def test_refusals_are_shown_with_their_message(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    bad = _upload(client, "E-Mail\r\nanna@example.com\r\n".encode("utf-16"))
    assert bad.status_code == 422
    assert "The file is neither UTF-8 nor Windows-1252 text." in bad.get_data(as_text=True)
    assert session.scalar(select(ImportJob.id)) is None

    job_id = _job_id(_upload(client, CSV).headers["Location"])
    token = csrf_token(client.get(f"/contacts/imports/{job_id}/map").get_data(as_text=True))
    twice = client.post(
        f"/contacts/imports/{job_id}/map",
        data={"column-0": "email", "column-1": "last_name", "column-2": "last_name"}
        | {"csrf_token": token},
    )
    assert twice.status_code == 422
    html = twice.get_data(as_text=True)
    assert "Two columns are mapped to last_name." in html
    # The page shows the choice that was refused, so it can be corrected.
    assert _selected(html, 1) == "last_name"
    no_email = client.post(
        f"/contacts/imports/{job_id}/map", data={"column-1": "first_name", "csrf_token": token}
    )
    assert no_email.status_code == 422
    assert "No column is mapped to the email address." in no_email.get_data(as_text=True)
    session.expire_all()
    assert session.scalar(select(ImportJob.mapping)) is None


def test_a_failed_events_job_shows_its_problem(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    job_id = _job_id(
        _upload(client, b"E-Mail;Typ\r\nanna@example.com;Notiz\r\n", "events").headers["Location"]
    )
    html = client.get(f"/contacts/imports/{job_id}/map").get_data(as_text=True)
    assert [_selected(html, i) for i in range(2)] == ["email", "type"]
    assert "Berlin time" in html
    session.execute(
        ImportJob.__table__.update().where(ImportJob.id == job_id).values(mapping={"Typ": "type"})
    )
    session.commit()
    import_jobs.run_next(app.extensions["nurture"].db, now_fn=clock.now)

    detail = client.get(f"/contacts/imports/{job_id}").get_data(as_text=True)
    assert "The import failed." in detail
    assert str(escape("No column is mapped to the email address or the customer number.")) in detail
    assert client.get(f"/contacts/imports/{job_id}/errors.csv").status_code == 404


def test_sales_may_not_import(client: FlaskClient, session: Session, clock: FrozenClock) -> None:
    job = import_jobs.create_job(
        session, kind="contacts", filename="k.csv", data=CSV, user=None, now=clock.now()
    )
    session.commit()
    _as(client, session, clock, Role.SALES)
    for url in (
        "/contacts/imports",
        f"/contacts/imports/{job.id}/map",
        f"/contacts/imports/{job.id}",
        f"/contacts/imports/{job.id}/progress.json",
        f"/contacts/imports/{job.id}/errors.csv",
    ):
        assert client.get(url).status_code == 403, url
    token = csrf_token(client.get("/").get_data(as_text=True))
    upload = {"csrf_token": token, "kind": "contacts", "file": (io.BytesIO(CSV), "k.csv")}
    assert client.post("/contacts/imports", data=upload).status_code == 403
    mapping = {"csrf_token": token, "column-0": "email"}
    assert client.post(f"/contacts/imports/{job.id}/map", data=mapping).status_code == 403
    session.expire_all()
    assert session.scalar(select(ImportJob.mapping)) is None
    assert client.get("/contacts/imports/999999").status_code == 403

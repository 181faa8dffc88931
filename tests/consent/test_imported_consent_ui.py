"""The import wizard's consent section: the proof is declared at mapping and used by the run."""

from __future__ import annotations

import hashlib
import io
import re

from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record
from nurture.consent.models import Action, ConsentEntry, TopicKind
from nurture.contacts import import_jobs
from nurture.contacts.models import Contact, ImportJob
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_topic, make_user

TEXT = "Ja, ich möchte den Newsletter der Beispiel GmbH per E-Mail erhalten."
SHA = hashlib.sha256(f"de\n{TEXT}".encode()).hexdigest()
CSV = (
    "E-Mail;Vorname;Einwilligung\r\n"
    "anna@example.com;Anna;ja\r\n"
    "bernd@example.com;Bernd;nein\r\n"
    "clara@example.com;Clara;vielleicht\r\n"
    "dora@example.com;Dora;x\r\n"
).encode("cp1252")
NEEDS_PROOF = (
    "A column is mapped to consent, but consent needs a proof reference: where, when and with "
    "which text it was collected."
)


def _login(client: FlaskClient, session: Session, clock: FrozenClock) -> User:
    user = make_user(session, clock, role=Role.MARKETER)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def _upload(client: FlaskClient, data: bytes) -> int:
    token = csrf_token(client.get("/contacts/imports").get_data(as_text=True))
    uploaded = client.post(
        "/contacts/imports",
        data={"csrf_token": token, "kind": "contacts", "file": (io.BytesIO(data), "messe.csv")},
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 302, uploaded.get_data(as_text=True)
    match = re.fullmatch(r"/contacts/imports/(\d+)/map", uploaded.headers["Location"])
    assert match
    return int(match.group(1))


def test_the_wizard_imports_consent_with_the_declared_proof(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    make_topic(session, clock, "news", name="Newsletter")
    make_topic(session, clock, "tracking", name="Tracking", kind=TopicKind.TRACKING)
    session.commit()
    user = _login(client, session, clock)
    job_id = _upload(client, CSV)

    page = client.get(f"/contacts/imports/{job_id}/map")
    html = page.get_data(as_text=True)
    assert "An import never creates consent" in html
    assert 'id="import-consent"' in html
    assert 'name="consent_topics" value="news"' in html
    # Tracking consent cannot come from a file: no checkbox for it.
    assert 'value="tracking"' not in html
    assert '<option value="consent">' in html
    assert 'max="2026-01-05"' in html
    columns = {"column-0": "email", "column-1": "first_name", "column-2": "consent"}
    token = csrf_token(html)

    # A consent column without the proof: refused with the message, nothing queued.
    refused = client.post(f"/contacts/imports/{job_id}/map", data=columns | {"csrf_token": token})
    assert refused.status_code == 422
    assert str(escape(NEEDS_PROOF)) in refused.get_data(as_text=True)

    # A proof with a date in the future: refused, the entered values stay in the form.
    proof = {
        "consent_topics": "news",
        "consent_source": "Messe-Formular Köln 2025",
        "consent_date": "2026-01-06",
        "consent_text": TEXT,
        "consent_language": "de",
    }
    future = client.post(
        f"/contacts/imports/{job_id}/map", data=columns | proof | {"csrf_token": token}
    )
    assert future.status_code == 422
    future_html = future.get_data(as_text=True)
    assert "The date on which the consent was collected lies in the future." in future_html
    assert 'id="consent-date" name="consent_date" max="2026-01-05" value="2026-01-06"' in (
        future_html
    )
    assert 'value="news" checked' in future_html
    assert str(escape(TEXT)) in future_html

    mapped = client.post(
        f"/contacts/imports/{job_id}/map",
        data=columns | proof | {"consent_date": "2025-12-01", "csrf_token": token},
    )
    assert mapped.status_code == 302
    job = session.get(ImportJob, job_id)
    assert job is not None and job.mapping is not None
    assert job.mapping["@consent"] == {
        "topics": ["news"],
        "source": "Messe-Formular Köln 2025",
        "date": "2025-12-01",
        "text": TEXT,
        "language": "de",
        "all_rows": False,
        "declared_by": f"user:{user.id}",
    }
    queued = client.get(f"/contacts/imports/{job_id}").get_data(as_text=True)
    assert "Consent imported with proof" in queued
    assert "The consent is recorded as the rows are imported." in queued

    assert import_jobs.run_next(app.extensions["nurture"].db, now_fn=clock.now) == job_id
    session.expire_all()

    detail = client.get(f"/contacts/imports/{job_id}").get_data(as_text=True)
    assert "4 rows read: 3 created, 0 updated, 0 unchanged, 1 failed." in detail
    assert '<dd id="import-consents-imported">2</dd>' in detail
    assert '<dd id="import-consents-skipped">0</dd>' in detail
    assert "<code>news</code>" in detail and "2025-12-01" in detail
    # The bad consent cell is the failed row.
    assert "consent: &#39;vielleicht&#39; is not yes or no" in detail

    entries = list(session.scalars(select(ConsentEntry).order_by(ConsentEntry.id)))
    emails = {
        c.id: c.email for c in session.scalars(select(Contact).where(Contact.id.is_not(None)))
    }
    assert [emails[e.contact_id] for e in entries] == ["anna@example.com", "dora@example.com"]  # type: ignore[index]
    assert {e.source for e in entries} == {f"import:job-{job_id}"}
    assert entries[0].text_hash == SHA
    assert entries[1].evidence == {
        "source": "Messe-Formular Köln 2025",
        "date": "2025-12-01",
        "text_version": SHA,
        "file": "messe.csv",
        "declared_by": f"user:{user.id}",
        "line": 5,
    }

    # Anna withdraws; the same file imported again restores nothing and says why.
    clock.advance(hours=1)
    record(
        session,
        contact_id=entries[0].contact_id,  # type: ignore[arg-type]
        topic=make_topic(session, clock, "news"),
        action=Action.WITHDRAWN,
        origin=Origin(source="link"),
        now=clock.now(),
    )
    session.commit()
    again = _upload(client, CSV)
    token = csrf_token(client.get(f"/contacts/imports/{again}/map").get_data(as_text=True))
    client.post(
        f"/contacts/imports/{again}/map",
        data=columns | proof | {"consent_date": "2025-12-01", "csrf_token": token},
    )
    assert import_jobs.run_next(app.extensions["nurture"].db, now_fn=clock.now) == again
    rerun = client.get(f"/contacts/imports/{again}").get_data(as_text=True)
    assert '<dd id="import-consents-imported">0</dd>' in rerun
    assert '<dd id="import-consents-skipped">2</dd>' in rerun
    assert re.search(
        r'<th scope="row" class="num">2</th>\s*'
        r'<td class="cell-wrap">consent not imported: withdrawn on 2026-01-05 \(news\)</td>',
        rerun,
    )
    session.expire_all()
    assert len(list(session.scalars(select(ConsentEntry)))) == 3


def test_a_file_with_a_column_named_at_consent_is_refused(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _login(client, session, clock)
    token = csrf_token(client.get("/contacts/imports").get_data(as_text=True))
    refused = client.post(
        "/contacts/imports",
        data={
            "csrf_token": token,
            "kind": "contacts",
            "file": (io.BytesIO(b"email;@consent\r\na@example.com;ja\r\n"), "x.csv"),
        },
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422
    assert "The file has a column named @consent, a name nurture reserves. Rename it." in (
        refused.get_data(as_text=True)
    )
    assert session.scalar(select(ImportJob.id)) is None

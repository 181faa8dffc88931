"""GDPR rights: the export of everything about a contact, and erasure that leaves nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import JSON, LargeBinary, String, Text, func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.existing_customers import record_existing_customer
from nurture.consent.gdpr import ERASED_ADDRESS, erase_contact, erasure_entries
from nurture.consent.ledger import ConsentError, Origin, record
from nurture.consent.models import Action, ConsentEntry, Suppression, SuppressionReason
from nurture.consent.optin import confirm, request_optin
from nurture.consent.suppression import SUPPRESSED_MESSAGE, address_hash
from nurture.contacts import import_jobs
from nurture.contacts.activity import record_activities
from nurture.contacts.custom_fields import create_field
from nurture.contacts.importer import import_contacts
from nurture.contacts.merge import merge_contacts
from nurture.contacts.models import Contact, ImportJob
from nurture.db import Base
from nurture.events import Event
from nurture.mail import outbox
from nurture.mail.delivery import Deliverer
from nurture.mail.identity import confirmation_token
from nurture.mail.models import CapturedMail, Message, MessageState, Purpose
from nurture.ops.heartbeat import register_worker
from tests.conftest import SECRET, csrf_token, login
from tests.factories import PASSWORD, make_contact, make_topic, make_user

EMAIL = "xaverine.quastenberg@zwiebelwerk.example"
OTHER_EMAIL = "x.quastenberg@privatpost.example"
PERSON = {
    "email": EMAIL,
    "first_name": "Xaverine",
    "last_name": "Quastenberg",
    "company": "Zwiebelwerk Nordhessen",
    "city": "Kleinblittersdorf",
    "phone": "+49 6805 918273",
    "custom": {"hobby": "Zwiebelschnitzen"},
}
SIGNUP = Origin(source="form:Fq9", ip="198.51.100.77", user_agent="Mozilla/5.0 ErasureProbe/9.9")
CLICK = Origin(source="link", ip="203.0.113.45", user_agent="Safari/17 ConfirmProbe/1.2")
TEXT = "Ja, ich möchte den Newsletter der Zwiebelwerk GmbH. Abmeldung jederzeit."


@dataclass
class Scenario:
    contact: Contact
    admin: User
    needles: list[str]
    other_row: bytes


def _settings(app: Flask):  # type: ignore[no-untyped-def]
    return app.extensions["nurture"].settings


def _everything(app: Flask, session: Session, clock: FrozenClock) -> Scenario:
    """A contact with a trace in every table that can hold one."""
    settings = _settings(app)
    admin = make_user(session, clock, role=Role.ADMIN)
    create_field(session, key="hobby", label="Hobby", kind="text", choices=[], now=clock.now())
    news = make_topic(session, clock, "news", name="Newsletter")
    shop = make_topic(session, clock, "shop", name="Shop", own_similar_products=True)
    contact = make_contact(session, clock, **PERSON)
    clock.advance(seconds=5)
    request = request_optin(
        session,
        email=EMAIL,
        data={},
        topics=[news],
        text=TEXT,
        language="de",
        origin=SIGNUP,
        now=clock.now(),
        settings=settings,
    )
    assert request is not None
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    # The capture transport keeps the raw confirmation mail in the database.
    assert Deliverer(app.extensions["nurture"], worker_id=worker.id).run().sent == 1
    session.expire_all()
    mail = session.get(Message, request.message_id)
    assert mail is not None and mail.subject
    clock.advance(minutes=30)
    token = confirmation_token(SECRET, mail.token)
    confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    record_existing_customer(
        session,
        contact,
        shop,
        sale_reference="Bestellung 4711 Quastenberg",
        notice_text="Widerspruch jederzeit möglich.",
        origin=Origin(source="import:quastenberg-kunden.csv"),
        now=clock.now(),
    )
    record_activities(
        session,
        [{"type": "note", "contact_id": contact.id, "text": "Xaverine ruft +49 6805 918273 an"}],
        now=clock.now(),
        source=f"user:{admin.id}",
    )
    # The same person under a second address, with a withdrawal, merged into the first.
    other = make_contact(session, clock, email=OTHER_EMAIL, first_name="Xaverine")
    record(
        session,
        contact_id=other.id,
        topic=news,
        action=Action.WITHDRAWN,
        origin=Origin(source="link", ip=SIGNUP.ip, user_agent=SIGNUP.user_agent),
        now=clock.now(),
    )
    merge_contacts(session, keep=contact, merge=other, choices={}, user=admin, now=clock.now())
    # An import whose file names the person twice: once fine, once with a bad birthday, which
    # puts the row into the error report too.
    other_row = b"nina@kunde.example;Nina;01.02.1990\n"
    data = (
        b"E-Mail;Vorname;Geburtstag\n"
        + f"{EMAIL.upper()};Xaverine;02.03.1980\n".encode()
        + other_row
        + f"{EMAIL};Xaverine;31.02.1980\n".encode()
    )
    job = import_jobs.create_job(
        session, kind="contacts", filename="k.csv", data=data, user=admin, now=clock.now()
    )
    mapping = {"E-Mail": "email", "Vorname": "first_name", "Geburtstag": "birthday"}
    import_jobs.set_mapping(session, job, mapping, {})
    session.commit()
    state = app.extensions["nurture"]
    import_jobs.run_pending(
        state.db, now_fn=clock.now, suppression_secret=settings.suppression_secret
    )
    # A marketing mail still waiting in the outbox.
    outbox.enqueue(
        session,
        key="enrolment:1:step:1",
        purpose=Purpose.MARKETING,
        to_addr=EMAIL,
        to_name="Xaverine Quastenberg",
        context={"contact": {"first_name": "Xaverine", "city": "Kleinblittersdorf"}},
        now=clock.now(),
        builtin="sales_notification",
        contact_id=contact.id,
        topic="news",
    )
    session.commit()
    session.expire_all()
    contact = session.get(Contact, contact.id)
    assert contact is not None
    needles = [
        EMAIL,
        OTHER_EMAIL,
        contact.first_name,
        contact.last_name,
        contact.company,
        contact.city,
        contact.phone,
        "918273",
        "Zwiebelschnitzen",
        SIGNUP.ip,
        SIGNUP.user_agent,
        CLICK.ip,
        CLICK.user_agent,
    ]
    return Scenario(contact=contact, admin=admin, needles=needles, other_row=other_row)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def personal_data_left(session: Session, needles: list[str]) -> list[str]:
    """Every (table.column, needle) where a text, JSON or binary column still holds a needle."""
    found = []
    wanted = [n.lower() for n in needles]
    for table in Base.metadata.sorted_tables:
        columns = [
            c for c in table.columns if isinstance(c.type, String | Text | JSON | LargeBinary)
        ]
        if not columns:
            continue
        for row in session.execute(select(*columns)):
            for column, value in zip(columns, row, strict=True):
                if value is None:
                    continue
                text = _text(value).lower()
                found += [f"{table.name}.{column.name}: {n}" for n in wanted if n in text]
    return sorted(set(found))


def test_the_scan_finds_the_person_before_erasure(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    scenario = _everything(app, session, clock)
    left = personal_data_left(session, scenario.needles)
    # The scan sees every place erasure has to clean, so its silence afterwards means something.
    for place in (
        "contacts.email",
        "contacts.custom",
        "consent_ledger.ip",
        "consent_ledger.user_agent",
        "consent_ledger.evidence",
        "consent_requests.ip",
        "events.payload",
        "messages.to_addr",
        "messages.to_name",
        "messages.context",
        "captured_mails.recipients",
        "captured_mails.raw",
        "import_jobs.data",
        "import_jobs.errors_csv",
    ):
        assert any(hit.startswith(place + ":") for hit in left), place


def test_erasure_leaves_no_personal_data_in_any_table(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    scenario = _everything(app, session, clock)
    contact_id = scenario.contact.id
    events_before = session.scalar(
        select(func.count()).select_from(Event).where(Event.contact_id == contact_id)
    )
    ledger_before = session.scalar(select(func.count()).select_from(ConsentEntry))
    clock.advance(days=1)

    erasure = erase_contact(
        session,
        scenario.contact,
        secret=_settings(app).suppression_secret,
        by=scenario.admin,
        source=f"user:{scenario.admin.id}",
        now=clock.now(),
    )
    session.commit()

    assert personal_data_left(session, scenario.needles) == []
    assert session.get(Contact, contact_id) is None
    # The address stays blocked, as a keyed hash only.
    suppression = session.scalars(select(Suppression)).one()
    assert suppression.address_hash == address_hash(_settings(app).suppression_secret, EMAIL)
    assert suppression.reason is SuppressionReason.ERASED
    # The ledger keeps every fact and shows the erasure, per topic, with who and when.
    entries = erasure_entries(session, contact_id)
    assert len(entries) == erasure.erasure_entries == 2
    assert {(e.source, e.at, e.evidence["by_user_id"]) for e in entries} == {
        (f"user:{scenario.admin.id}", clock.now(), scenario.admin.id)
    }
    assert session.scalar(select(func.count()).select_from(ConsentEntry)) == ledger_before + 2
    kinds = set(session.scalars(select(ConsentEntry.source).distinct()))
    assert kinds == {"form", "link", "import", "merge", f"user:{scenario.admin.id}"}
    # Events stay as anonymous counts, and the erasure itself is logged without personal data.
    anonymous = session.scalar(
        select(func.count()).select_from(Event).where(Event.contact_id.is_(None))
    )
    assert anonymous == events_before + 1
    logged = session.scalars(select(Event).where(Event.type == "contact_erased")).one()
    assert logged.payload == {"contact_id": contact_id, "by_user_id": scenario.admin.id}
    # Mail: nothing more goes out; what went out keeps its state but not the person.
    messages = session.scalars(select(Message).order_by(Message.id)).all()
    assert [(m.state, m.reason, m.to_addr) for m in messages] == [
        (MessageState.SENT, None, ERASED_ADDRESS),
        (MessageState.CANCELLED, "erased", ERASED_ADDRESS),
    ]
    assert session.scalars(select(CapturedMail)).all() == []
    # The import keeps the other person's row.
    job = session.scalars(select(ImportJob)).one()
    assert scenario.other_row in job.data


def test_an_erased_address_cannot_come_back(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    settings = _settings(app)
    news = make_topic(session, clock, "news")
    contact = make_contact(session, clock, email=EMAIL)
    session.commit()
    erase_contact(
        session,
        contact,
        secret=settings.suppression_secret,
        by=None,
        source="api:crm",
        now=clock.now(),
    )
    session.commit()

    report = import_contacts(
        session,
        f"email;first_name\n{EMAIL.upper()};Xaverine\n".encode(),
        mapping=None,
        now=clock.now(),
        source="import",
        suppression_secret=settings.suppression_secret,
    )
    assert [(e.line, e.message) for e in report.errors] == [(2, f"email: {SUPPRESSED_MESSAGE}")]
    with pytest.raises(ConsentError, match="cannot be signed up again"):
        request_optin(
            session,
            email=EMAIL,
            data={},
            topics=[news],
            text=TEXT,
            language="de",
            origin=SIGNUP,
            now=clock.now(),
            settings=settings,
        )
    assert session.scalars(select(Contact)).all() == []


# -- export ----------------------------------------------------------------------------------


def _auth(session: Session, clock: FrozenClock, role: Role) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "dsar", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_the_export_holds_everything_about_the_contact(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    scenario = _everything(app, session, clock)
    contact = scenario.contact
    response = client.get(
        f"/api/v1/contacts/{contact.id}/export", headers=_auth(session, clock, Role.MARKETER)
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    doc = response.json
    assert doc["format"] == "nurture.contact-export/1"
    assert {k: doc["contact"][k] for k in ("id", "email", "first_name", "city", "phone")} == {
        "id": contact.id,
        "email": EMAIL,
        "first_name": "Xaverine",
        "city": "Kleinblittersdorf",
        "phone": contact.phone,
    }
    assert doc["contact"]["birthday"] == "1980-03-02"
    assert doc["custom_fields"] == {"hobby": {"label": "Hobby", "value": "Zwiebelschnitzen"}}
    ledger = doc["consent"]["ledger"]
    assert [e["action"] for e in ledger] == [
        "requested",
        "confirmed",
        "existing_customer",
        "withdrawn",
        "withdrawn",
    ]
    assert ledger[0]["text"] == {"language": "de", "text": TEXT}
    assert ledger[0]["ip"] == SIGNUP.ip and ledger[1]["user_agent"] == CLICK.user_agent
    assert ledger[2]["evidence"]["sale"] == "Bestellung 4711 Quastenberg"
    assert doc["consent"]["current"]["news"]["state"] == "none"
    assert doc["consent"]["current"]["shop"]["state"] == "existing_customer"
    types = [e["type"] for e in doc["events"]]
    assert {"contact_created", "note", "contact_merged", "queued", "sent"} <= set(types)
    note = next(e for e in doc["events"] if e["type"] == "note")
    assert note["payload"]["text"] == "Xaverine ruft +49 6805 918273 an"
    sent, queued = doc["messages"]
    assert (sent["to"], sent["state"], sent["purpose"]) == (EMAIL, "sent", "transactional")
    assert (
        sent["subject"]
        and sent["sent_at"]
        and sent["message_id_header"].endswith("@nurture.example>")
    )
    assert (queued["state"], queued["topic"], queued["sent_at"]) == ("queued", "news", None)
    assert doc["suppression"] == {"suppressed": False, "reason": None, "since": None}


def test_the_export_download_and_who_may_export(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock, email=EMAIL, first_name="Xaverine")
    session.commit()
    sales = client.get(
        f"/api/v1/contacts/{contact.id}/export", headers=_auth(session, clock, Role.SALES)
    )
    assert sales.status_code == 403

    user = make_user(session, clock, role=Role.SALES)
    assert login(client, user.email, PASSWORD).status_code == 302
    assert client.get(f"/contacts/{contact.id}/export").status_code == 403

    marketer = app.test_client()
    user = make_user(session, clock, role=Role.MARKETER)
    assert login(marketer, user.email, PASSWORD).status_code == 302
    download = marketer.get(f"/contacts/{contact.id}/export")
    assert download.status_code == 200
    assert download.mimetype == "application/json"
    assert download.headers["Content-Disposition"] == (
        f'attachment; filename="contact-{contact.id}-export.json"'
    )
    doc = json.loads(download.get_data(as_text=True))
    assert doc["contact"]["first_name"] == "Xaverine"
    assert marketer.get("/contacts/987654/export").status_code == 404


# -- erasure through the UI and the API ----------------------------------------------------


def test_the_erase_page_wants_the_address_typed(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock, email=EMAIL, first_name="Xaverine")
    admin = make_user(session, clock, role=Role.ADMIN)
    marketer = make_user(session, clock, role=Role.MARKETER)
    session.commit()
    contact_id = contact.id
    url = f"/contacts/{contact_id}/erase"

    as_marketer = app.test_client()
    assert login(as_marketer, marketer.email, PASSWORD).status_code == 302
    assert as_marketer.get(url).status_code == 403

    assert login(client, admin.email, PASSWORD).status_code == 302
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="erase-form"' in html and EMAIL in html
    token = csrf_token(html)
    wrong = client.post(url, data={"csrf_token": token, "email": "someone@else.example"})
    assert wrong.status_code == 422
    assert "That is not this contact&#39;s email address; nothing was erased." in (
        wrong.get_data(as_text=True)
    )
    assert client.post(url, data={"email": EMAIL}).status_code == 400  # no CSRF token
    session.expire_all()
    assert session.get(Contact, contact_id) is not None

    done = client.post(url, data={"csrf_token": token, "email": f" {EMAIL.upper()} "})
    assert done.status_code == 302 and done.headers["Location"].endswith("/contacts")
    listing = client.get("/contacts").get_data(as_text=True)
    assert f"Contact {contact_id} was erased." in listing
    session.expire_all()
    assert session.get(Contact, contact_id) is None
    logged = session.scalars(select(Event).where(Event.type == "contact_erased")).one()
    assert logged.payload == {"contact_id": contact_id, "by_user_id": admin.id}


def test_delete_contact_through_the_api_is_for_admins(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    news = make_topic(session, clock, "news")
    contact = make_contact(session, clock, email=EMAIL)
    record(
        session,
        contact_id=contact.id,
        topic=news,
        action=Action.CONFIRMED,
        origin=SIGNUP,
        now=clock.now(),
    )
    session.commit()
    url = f"/api/v1/contacts/{contact.id}"
    assert client.delete(url, headers=_auth(session, clock, Role.MARKETER)).status_code == 403
    admin = _auth(session, clock, Role.ADMIN)
    response = client.delete(url, headers=admin)
    assert response.status_code == 200
    assert response.json == {
        "contact_id": contact.id,
        "erased_at": "2026-01-05T09:00:00Z",
        "suppressed": True,
        "ledger_entries_blanked": 1,
        "erasure_entries": 1,
        "events_emptied": 1,
        "messages_anonymised": 0,
    }
    [entry] = erasure_entries(session, contact.id)
    assert entry.source == "api:dsar"
    assert client.delete(url, headers=admin).status_code == 404
    assert client.get(url, headers=admin).status_code == 404

"""The suppression list blocks new contacts (import, API, new form) and learns hard bounces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.config import parse_smtp_url
from nurture.consent.models import Suppression, SuppressionReason
from nurture.consent.suppression import (
    SUPPRESSED_MESSAGE,
    address_hash,
    is_suppressed,
    refuse_new_suppressed,
    suppress,
)
from nurture.contacts import import_jobs
from nurture.contacts.context import template_context
from nurture.contacts.importer import import_contacts
from nurture.contacts.models import Contact
from nurture.mail import outbox
from nurture.mail.delivery import Deliverer
from nurture.mail.models import Message, MessageState, Purpose
from nurture.mail.transports import SmtpTransport
from nurture.ops.heartbeat import register_worker
from tests.conftest import csrf_token, free_port, login
from tests.factories import PASSWORD, make_contact, make_user
from tests.mail.conftest import SinkHandler, SmtpSink

ROW_ERROR = f"email: {SUPPRESSED_MESSAGE}"


def _secret(app: Flask) -> str:
    return app.extensions["nurture"].settings.suppression_secret


def _suppress(app: Flask, session: Session, clock: FrozenClock, *emails: str) -> None:
    for email in emails:
        suppress(
            session,
            secret=_secret(app),
            email=email,
            reason=SuppressionReason.UNSUBSCRIBED,
            now=clock.now(),
        )
    session.commit()


def _emails(session: Session) -> list[str]:
    return list(session.scalars(select(Contact.email).order_by(Contact.email)))


CSV = (
    b"E-Mail;Vorname\n"
    b"neu@kunde.example;Nina\n"
    b"WEG@kunde.example;Wilma\n"
    b"bleibt@kunde.example;Bruno\n"
    b"weg2@kunde.example;Walter\n"
)


@pytest.mark.parametrize("batch_size", [1000, 1])
def test_import_refuses_new_suppressed_addresses_row_by_row(
    app: Flask, session: Session, clock: FrozenClock, batch_size: int
) -> None:
    # "bleibt" is suppressed but still a contact (unsubscribed): it stays updatable.
    make_contact(session, clock, email="bleibt@kunde.example")
    _suppress(
        app, session, clock, "weg@kunde.example", "bleibt@kunde.example", "weg2@kunde.example"
    )
    report = import_contacts(
        session,
        CSV,
        mapping=None,
        now=clock.now(),
        source="import",
        batch_size=batch_size,
        suppression_secret=_secret(app),
    )
    session.commit()
    assert [(e.line, e.field, e.message) for e in report.errors] == [
        (3, "email", ROW_ERROR),
        (5, "email", ROW_ERROR),
    ]
    assert (report.created, report.updated) == (1, 1)
    assert _emails(session) == ["bleibt@kunde.example", "neu@kunde.example"]


def test_the_careful_path_refuses_them_too(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    # The same address twice in one file: the second row takes the row-by-row path.
    _suppress(app, session, clock, "weg@kunde.example")
    data = b"email;first_name\nweg@kunde.example;A\nweg@kunde.example;B\n"
    report = import_contacts(
        session, data, mapping=None, now=clock.now(), source="t", suppression_secret=_secret(app)
    )
    assert [(e.line, e.message) for e in report.errors] == [(2, ROW_ERROR), (3, ROW_ERROR)]
    assert _emails(session) == []


def test_worker_imports_pass_the_secret(app: Flask, session: Session, clock: FrozenClock) -> None:
    _suppress(app, session, clock, "weg@kunde.example")
    job = import_jobs.create_job(
        session, kind="contacts", filename="k.csv", data=CSV, user=None, now=clock.now()
    )
    import_jobs.set_mapping(session, job, {"E-Mail": "email", "Vorname": "first_name"}, {})
    session.commit()
    state = app.extensions["nurture"]
    ran = import_jobs.run_pending(
        state.db, now_fn=clock.now, suppression_secret=state.settings.suppression_secret
    )
    assert ran == 1
    session.expire_all()
    assert "weg@kunde.example" not in _emails(session)
    assert SUPPRESSED_MESSAGE in session.get(type(job), job.id).errors_csv


def test_refuse_new_suppressed_lets_known_contacts_through(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    make_contact(session, clock, email="bleibt@kunde.example", customer_number="K-1")
    _suppress(app, session, clock, "bleibt@kunde.example", "neu@kunde.example")
    secret = _secret(app)
    refuse_new_suppressed(session, secret=secret, email="Bleibt@Kunde.example")
    refuse_new_suppressed(session, secret=secret, email="frei@kunde.example")
    # The customer number names an existing contact: an address change, not a new contact.
    refuse_new_suppressed(session, secret=secret, email="neu@kunde.example", customer_number="K-1")
    with pytest.raises(ValueError, match="on the suppression list"):
        refuse_new_suppressed(session, secret=secret, email="NEU@kunde.example")


def _auth(session: Session, clock: FrozenClock, role: Role) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_the_contacts_api_refuses_a_suppressed_new_address(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    make_contact(session, clock, email="bleibt@kunde.example")
    _suppress(app, session, clock, "weg@kunde.example", "bleibt@kunde.example")
    auth = _auth(session, clock, Role.MARKETER)
    refused = client.post("/api/v1/contacts", json={"email": "Weg@Kunde.example"}, headers=auth)
    assert refused.status_code == 422
    assert refused.json["error"] == {
        "code": "suppressed",
        "message": SUPPRESSED_MESSAGE,
        "details": {"email": SUPPRESSED_MESSAGE},
    }
    updated = client.post(
        "/api/v1/contacts",
        json={"email": "bleibt@kunde.example", "city": "Köln"},
        headers=auth,
    )
    assert updated.status_code == 200 and updated.json["city"] == "Köln"
    assert _emails(session) == ["bleibt@kunde.example"]


def test_the_new_contact_form_refuses_a_suppressed_address(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _suppress(app, session, clock, "weg@kunde.example")
    user = make_user(session, clock, role=Role.MARKETER)
    assert login(client, user.email, PASSWORD).status_code == 302
    token = csrf_token(client.get("/contacts/new").get_data(as_text=True))
    response = client.post(
        "/contacts/new",
        data={
            "csrf_token": token,
            "email": "weg@kunde.example",
            "gender": "unknown",
            "formality": "formal",
            "language": "de",
            "lifecycle": "lead",
        },
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "This address is on the suppression list (unsubscribed, bounced or erased)" in html
    assert _emails(session) == []


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        yield SmtpSink(handler, port)
    finally:
        controller.stop()


def _confirmation(session: Session, clock: FrozenClock, key: str, contact: Contact) -> None:
    outbox.enqueue(
        session,
        key=key,
        purpose=Purpose.TRANSACTIONAL,
        to_addr=contact.email,
        context=template_context(contact)
        | {"confirm_url": "https://x.example/confirm/t", "expires_days": 7, "topic": "News"},
        now=clock.now(),
        builtin="optin_confirmation",
        contact_id=contact.id,
    )


def test_a_hard_bounce_suppresses_the_address(
    app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink
) -> None:
    gone = make_contact(session, clock, email="hard-gone@kunde.example")
    fine = make_contact(session, clock, email="fine@kunde.example")
    for key, contact in (("bounce", gone), ("fine", fine)):
        _confirmation(session, clock, key, contact)
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    deliverer = Deliverer(
        app.extensions["nurture"],
        worker_id=worker.id,
        transport=SmtpTransport(parse_smtp_url(sink.url)),
    )
    report = deliverer.run()
    assert (report.sent, report.failed) == (1, 1)
    session.expire_all()
    row = session.scalars(select(Suppression)).one()
    assert (row.address_hash, row.reason) == (
        address_hash(_secret(app), "hard-gone@kunde.example"),
        SuppressionReason.HARD_BOUNCE,
    )
    assert not is_suppressed(session, secret=_secret(app), email="fine@kunde.example")
    failed = session.scalars(select(Message).where(Message.key == "bounce")).one()
    assert (failed.state, failed.reason) == (MessageState.FAILED, "hard_bounce")
    # The bounced address is never mailed again.
    _confirmation(session, clock, "again", gone)
    session.commit()
    assert deliverer.run().skipped == 1
    count = session.scalar(select(func.count()).select_from(Suppression))
    assert count == 1

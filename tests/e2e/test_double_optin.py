"""Double opt-in from sign-up to the first marketing mail, with a real SMTP server."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.config import parse_smtp_url
from nurture.consent.models import Action, ConsentEntry, SignupForm
from nurture.consent.signup_forms import create_form
from nurture.contacts.models import Contact
from nurture.mail import outbox
from nurture.mail.delivery import Deliverer
from nurture.mail.gate import refusal
from nurture.mail.models import Message, MessageState, Purpose
from nurture.mail.templates import TemplateDraft, create_template, latest_version
from nurture.mail.transports import SmtpTransport
from nurture.ops.heartbeat import register_worker
from tests.conftest import csrf_token
from tests.factories import make_topic
from tests.mail import conftest as mail_fixtures
from tests.mail.conftest import Received, SmtpSink

smtp_sink = mail_fixtures.smtp_sink  # the real aiosmtpd server of the mail tests

TEXT = "Ja, ich möchte den Newsletter der Beispiel GmbH erhalten. Abmeldung jederzeit möglich."
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
HREF = re.compile(r'href="([^"]+)"')


def _form(session: Session, clock: FrozenClock) -> SignupForm:
    form = create_form(
        session,
        name="Newsletter footer",
        topics=[make_topic(session, clock, "news", name="Newsletter")],
        text=TEXT,
        language="de",
        ask_tracking=False,
        now=clock.now(),
    )
    session.commit()
    return form


def _deliver(app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink) -> None:
    state = app.extensions["nurture"]
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    transport = SmtpTransport(parse_smtp_url(sink.url))
    Deliverer(state, worker_id=worker.id, transport=transport).run(budget_seconds=10)
    session.expire_all()


def _marketing(session: Session, clock: FrozenClock, contact: Contact, key: str) -> Message:
    template = create_template(
        session,
        name=f"Comeback {key}",
        draft=TemplateDraft(
            subject="Wir vermissen Sie",
            html='<p>{{ salutation }},</p><p><a href="https://shop.example/">Zum Shop</a></p>',
        ),
        now=clock.now(),
        imprint=("Beispiel GmbH", "Musterstraße 1, 10115 Berlin"),
    )
    version = latest_version(session, template.id)
    assert version is not None
    message = outbox.enqueue(
        session,
        key=key,
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        context={"contact": {"first_name": contact.first_name}, "salutation": "Hallo Anna"},
        template_version_id=version.id,
        contact_id=contact.id,
        topic="news",
        now=clock.now(),
    )
    assert message is not None
    session.commit()
    return message


def _html(received: Received) -> str:
    part = received.message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _ledger(session: Session) -> list[ConsentEntry]:
    session.expire_all()
    return list(session.scalars(select(ConsentEntry).order_by(ConsentEntry.id)))


def test_double_optin_from_the_hosted_form_to_the_first_marketing_mail(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, smtp_sink: SmtpSink
) -> None:
    settings = app.extensions["nurture"].settings
    form = _form(session, clock)

    # 1. A person fills in the hosted form (taking their time) and submits it.
    page = client.get(f"/s/{form.public_id}").get_data(as_text=True)
    stamp = re.search(r'name="ts" value="([^"]+)"', page)
    assert stamp is not None
    clock.advance(seconds=20)
    signed_up_at = clock.now()
    response = client.post(
        f"/s/{form.public_id}",
        data={
            "ts": stamp.group(1),
            "email": "anna.mueller@kunde.example",
            "first_name": "Anna",
            "last_name": "Müller",
            "gender": "female",
            "topics": "news",
            "website": "",
        },
        headers={"User-Agent": BROWSER},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert response.status_code == 200 and 'id="signup-sent"' in response.get_data(as_text=True)
    contact = session.scalars(select(Contact)).one()

    # Before the confirmation a marketing mail is refused for lack of consent.
    early = _marketing(session, clock, contact, "comeback:early")
    assert refusal(session, early, clock.now(), settings) == "no_consent"

    # 2. The worker sends the confirmation mail; the marketing mail is skipped with its reason.
    clock.advance(seconds=5)
    _deliver(app, session, clock, smtp_sink)
    refused = session.get(Message, early.id)
    assert refused is not None
    assert (refused.state, refused.reason) == (MessageState.CANCELLED, "no_consent")
    [mail] = smtp_sink.received
    assert mail.rcpt_tos == ["anna.mueller@kunde.example"]
    headers = mail.message
    assert headers["Subject"] == "Bitte bestätigen Sie Ihre E-Mail-Adresse"
    # No unsubscribe block, no tracking, no advertising: only the request and the link.
    assert headers["List-Unsubscribe"] is None and headers["List-Unsubscribe-Post"] is None
    html = _html(mail)
    text = str(headers.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    assert "<img" not in html.lower()
    links = set(HREF.findall(html))
    assert len(links) == 1
    [link] = links
    assert link.startswith(f"{settings.base_url}/confirm/")
    for body in (html, text):
        assert "/u/" not in body and "/p/" not in body
        assert "abmelden" not in body.lower() and "unsubscribe" not in body.lower()
    assert "Sehr geehrte Frau Müller" in html and link in text

    # 3. Opening the link (a scanner, or the person) confirms nothing.
    path = urlparse(link).path
    before = [(e.id, e.action) for e in _ledger(session)]
    assert [a for _id, a in before] == [Action.REQUESTED]
    confirm_page = client.get(path)
    assert confirm_page.status_code == 200
    assert client.get(path).status_code == 200
    assert [(e.id, e.action) for e in _ledger(session)] == before
    assert refusal(session, early, clock.now(), settings) == "no_consent"

    # 4. The button (a POST from that page) confirms.
    clock.advance(minutes=42)
    confirmed_at = clock.now()
    done = client.post(
        path,
        data={"csrf_token": csrf_token(confirm_page.get_data(as_text=True))},
        headers={"User-Agent": PHONE},
        environ_base={"REMOTE_ADDR": "198.51.100.9"},
    )
    assert done.status_code == 200 and 'id="confirmed"' in done.get_data(as_text=True)

    # 5. The ledger holds both steps with IP, user agent, text hash and times.
    requested, confirmed = _ledger(session)
    text_hash = hashlib.sha256(f"de\n{TEXT}".encode()).hexdigest()
    assert (requested.action, requested.at, requested.ip, requested.user_agent) == (
        Action.REQUESTED,
        signed_up_at,
        "203.0.113.7",
        BROWSER,
    )
    assert (confirmed.action, confirmed.at, confirmed.ip, confirmed.user_agent) == (
        Action.CONFIRMED,
        confirmed_at,
        "198.51.100.9",
        PHONE,
    )
    for entry in (requested, confirmed):
        assert entry.text_hash == text_hash
        assert entry.source == f"form:{form.public_id}"
        assert entry.contact_id == contact.id
        assert entry.request_id == requested.request_id is not None
    assert confirmed.mail_message_id == headers["Message-ID"]

    # 6. Now a marketing mail may go, and it arrives.
    later = _marketing(session, clock, contact, "comeback:later")
    assert refusal(session, later, clock.now(), settings) is None
    clock.advance(timedelta(seconds=5))
    _deliver(app, session, clock, smtp_sink)
    sent = session.get(Message, later.id)
    assert sent is not None and sent.state == MessageState.SENT
    assert len(smtp_sink.received) == 2
    assert smtp_sink.received[1].message["Subject"] == "Wir vermissen Sie"


@pytest.mark.browser
def test_a_person_signs_up_and_confirms_in_the_browser(
    app: Flask,
    page,  # type: ignore[no-untyped-def]
    live_server: str,
    session: Session,
    clock: FrozenClock,
    smtp_sink: SmtpSink,
) -> None:
    form = _form(session, clock)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{live_server}/s/{form.public_id}")
    page.get_by_label("E-Mail-Adresse").fill("tom@kunde.example")
    page.get_by_label("Newsletter").check()
    clock.advance(seconds=30)  # people take their time
    page.locator("#signup-form button[type=submit]").click()
    page.wait_for_selector("#signup-sent")

    _deliver(app, session, clock, smtp_sink)
    [mail] = smtp_sink.received
    [link] = set(HREF.findall(_html(mail)))
    page.goto(live_server + urlparse(link).path)
    page.wait_for_selector("#confirm-form")
    assert page.locator("#confirm-topics").inner_text().strip() == "Newsletter"
    assert [e.action for e in _ledger(session)] == [Action.REQUESTED]

    page.locator("#confirm-form button[type=submit]").click()
    page.wait_for_selector("#confirmed")
    entries = _ledger(session)
    assert [e.action for e in entries] == [Action.REQUESTED, Action.CONFIRMED]
    agent = page.evaluate("navigator.userAgent")
    assert entries[1].user_agent == agent and entries[1].ip == "127.0.0.1"
    # The pages live within the strict Content-Security-Policy.
    assert not [line for line in console if "Content Security Policy" in line]

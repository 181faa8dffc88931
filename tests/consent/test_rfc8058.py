"""The six RFC 8058 checks: header form, DKIM coverage, POST without cookie, GET/HEAD change
nothing, tampered and foreign tokens, CSRF exempt only on the one-click POST."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.config import parse_smtp_url
from nurture.consent.ledger import states
from nurture.consent.models import Consent, ConsentEntry, ConsentState, Suppression, TopicKind
from nurture.consent.suppression import is_suppressed
from nurture.contacts.models import Contact
from nurture.events import Event
from nurture.mail import outbox
from nurture.mail.delivery import Deliverer
from nurture.mail.identity import LinkSigner
from nurture.mail.models import Message, Purpose
from nurture.mail.templates import TemplateDraft, create_template, latest_version
from nurture.mail.transports import SmtpTransport
from nurture.ops.heartbeat import register_worker
from tests.conftest import csrf_token, free_port
from tests.factories import grant_consent, make_subscriber, make_topic
from tests.mail.conftest import SinkHandler, SmtpSink

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
DRAFT = TemplateDraft(
    subject="{{ contact.first_name }}, wir vermissen Sie",
    html="<p>{{ salutation }},</p><p>Ihr Comeback-Code wartet.</p>",
)


# -- helpers shared by the consent link tests ----------------------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on loopback, as tests/mail/conftest.py's smtp_sink."""
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        yield SmtpSink(handler, port)
    finally:
        controller.stop()


def subscriber(session: Session, clock: FrozenClock, **fields: Any) -> Contact:
    """A contact with consent for "news" and for open/click tracking."""
    contact = make_subscriber(session, clock, **fields)
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING, name="Tracking")
    grant_consent(session, clock, contact, "tracking")
    session.commit()
    return contact


def queue_marketing(
    session: Session, clock: FrozenClock, app: Flask, contact: Contact, key: str = "m1"
) -> Message:
    """A marketing mail to ``contact`` about "news", queued in the real outbox."""
    template = create_template(
        session,
        name=f"Comeback {key}",
        draft=DRAFT,
        now=clock.now(),
        imprint=app.extensions["nurture"].settings.sender_imprint,
    )
    version = latest_version(session, template.id)
    assert version is not None
    message = outbox.enqueue(
        session,
        key=key,
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        to_name=contact.first_name,
        context={"contact": {"first_name": contact.first_name}, "salutation": "Hallo"},
        template_version_id=version.id,
        contact_id=contact.id,
        topic="news",
        now=clock.now(),
    )
    assert message is not None
    session.commit()
    return message


def deliverer(app: Flask, session: Session, clock: FrozenClock, url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    state = app.extensions["nurture"]
    state.settings = state.settings.with_overrides(**overrides)
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    return Deliverer(state, worker_id=worker.id, transport=SmtpTransport(parse_smtp_url(url)))


def signed(app: Flask, purpose: str, message: Message) -> str:
    return LinkSigner(app.extensions["nurture"].settings.secret_key, "").sign(
        purpose, message.token
    )


def snapshot(session: Session) -> dict[str, Any]:
    """Everything an unsubscribe could change."""
    session.expire_all()
    return {
        "ledger": session.scalars(select(ConsentEntry.id).order_by(ConsentEntry.id)).all(),
        "suppressions": session.scalars(select(Suppression.address_hash)).all(),
        "consents": session.execute(
            select(
                Consent.contact_id, Consent.topic_id, Consent.state, Consent.changed_at
            ).order_by(Consent.contact_id, Consent.topic_id)
        ).all(),
        "events": session.scalars(
            select(Event.type).where(Event.type.in_(("unsubscribed", "contact_updated")))
        ).all(),
    }


def all_off(session: Session, contact: Contact) -> bool:
    session.expire_all()
    current = states(session, contact.id)
    return bool(current) and all(c.state is ConsentState.NONE for c in current.values())


def secret(app: Flask) -> str:
    return app.extensions["nurture"].settings.suppression_secret


# -- (1) and (2): the headers of a real mail ------------------------------------------------------


@pytest.fixture
def private_key(tmp_path: Path) -> Path:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    return key


def _public_txt(key: Path) -> bytes:
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_a_sent_mail_has_the_one_click_headers_signed_by_dkim_and_its_url_works(
    app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink, private_key: Path
) -> None:
    contact = subscriber(session, clock, email="anna@kunde.example", first_name="Anna")
    message = queue_marketing(session, clock, app, contact)
    sender = deliverer(
        app,
        session,
        clock,
        sink.url,
        dkim_selector="nurture",
        dkim_domain="nurture.example",
        dkim_key_file=private_key,
        unsubscribe_mailto=True,  # mail to unsubscribe+TOKEN@ reaches nurture
    )
    assert sender.run().sent == 1
    [received] = sink.received
    mail = received.message

    # (1) One https URI and a mailto, nothing else; the Post header exactly as RFC 8058 says.
    uris = re.findall(r"<([^>]+)>", mail["List-Unsubscribe"])
    assert len(uris) == 2
    https, mailto = uris
    assert https.startswith("https://nurture.test/u/")
    assert mailto.startswith(f"mailto:unsubscribe+{message.token}@")
    assert mail.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert "anna" not in https.lower()  # opaque: no address in clear

    # (2) The signature covers both headers and verifies.
    tags = dict(
        part.strip().split("=", 1)
        for part in re.sub(r"\s+", "", mail["DKIM-Signature"]).split(";")
        if "=" in part
    )
    signed_headers = tags["h"].lower().split(":")
    assert "list-unsubscribe" in signed_headers
    assert "list-unsubscribe-post" in signed_headers
    public = _public_txt(private_key)
    assert dkim.verify(received.raw, dnsfunc=lambda name, timeout=5: public)

    # The header URL, posted as a mailbox provider does, unsubscribes.
    response = app.test_client().post(https.removeprefix("https://nurture.test"), data=ONE_CLICK)
    assert response.status_code == 200
    assert is_suppressed(session, secret=secret(app), email="anna@kunde.example")


# -- (3) POST without cookie ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_one_click_post_without_cookie_unsubscribes_and_a_repeat_is_still_200(
    app: Flask, session: Session, clock: FrozenClock, encoding: str
) -> None:
    contact = subscriber(session, clock, email="ben@kunde.example")
    message = queue_marketing(session, clock, app, contact)
    url = f"/u/{signed(app, 'unsubscribe', message)}"
    client = app.test_client()  # a fresh client: no session cookie, no CSRF token
    clock.advance(days=5 * 365)  # links never expire: an objection works at any time
    content_type = "multipart/form-data" if encoding == "multipart" else None

    first = client.post(url, data=ONE_CLICK, content_type=content_type)
    assert first.status_code == 200
    assert "Location" not in first.headers and "Set-Cookie" not in first.headers
    # The page speaks the contact's language (German by default).
    assert "Sie wurden abgemeldet" in first.get_data(as_text=True)
    assert is_suppressed(session, secret=secret(app), email="ben@kunde.example")
    assert all_off(session, contact)
    after_first = snapshot(session)
    assert after_first["events"] == ["unsubscribed"]

    again = client.post(url, data=ONE_CLICK, content_type=content_type)
    assert again.status_code == 200
    assert snapshot(session) == after_first  # idempotent: no new ledger rows or events


# -- (4) GET and HEAD change nothing -------------------------------------------------------------


def test_get_and_head_on_the_one_click_url_change_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="carla@kunde.example", language="en")
    message = queue_marketing(session, clock, app, contact)
    url = f"/u/{signed(app, 'unsubscribe', message)}"
    before = snapshot(session)
    client = app.test_client()

    page = client.get(url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Unsubscribe from all mail" in html
    # The button posts the one-click body to this same URL.
    assert f'action="{url}"' in html
    assert 'name="List-Unsubscribe" value="One-Click"' in html
    assert "Set-Cookie" not in page.headers
    head = client.head(url)
    assert head.status_code == 200 and head.get_data() == b""

    assert snapshot(session) == before
    assert not is_suppressed(session, secret=secret(app), email="carla@kunde.example")
    session.expire_all()
    assert all(c.state is ConsentState.GRANTED for c in states(session, contact.id).values())


def test_a_post_without_the_one_click_body_is_400_and_changes_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock)
    message = queue_marketing(session, clock, app, contact)
    url = f"/u/{signed(app, 'unsubscribe', message)}"
    before = snapshot(session)
    client = app.test_client()
    assert client.post(url).status_code == 400
    assert client.post(url, data={"List-Unsubscribe": "Yes"}).status_code == 400
    assert (
        client.post(url, data="List-Unsubscribe=One-Click", content_type="text/plain").status_code
        == 400
    )
    assert snapshot(session) == before


# -- (5) tampered and foreign tokens -------------------------------------------------------------


def test_tampered_and_foreign_tokens_get_4xx_and_change_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="dora@kunde.example")
    message = queue_marketing(session, clock, app, contact)
    good = signed(app, "unsubscribe", message)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    payload = good.split(".", 1)[0]
    other_payload = LinkSigner("another-secret-of-enough-length-0123456789", "").sign(
        "unsubscribe", message.token
    )
    forged = {
        "tampered signature": tampered,
        "signed elsewhere": other_payload,
        "preferences token on /u/": signed(app, "preferences", message),
        "view token on /u/": signed(app, "view", message),
        "unknown message": LinkSigner(app.extensions["nurture"].settings.secret_key, "").sign(
            "unsubscribe", "0" * 32
        ),
        "payload only": payload,
        "overlong": good + "x" * 300,
    }
    before = snapshot(session)
    client = app.test_client()
    for name, token in forged.items():
        for response in (client.post(f"/u/{token}", data=ONE_CLICK), client.get(f"/u/{token}")):
            assert 400 <= response.status_code < 500, name
    # And the other way round: an unsubscribe token does not open the preference centre.
    assert client.get(f"/p/{good}").status_code == 404
    assert snapshot(session) == before
    assert not is_suppressed(session, secret=secret(app), email="dora@kunde.example")


# -- (6) CSRF exempt only on the one-click POST --------------------------------------------------


def test_csrf_is_exempt_only_for_the_one_click_post(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="emil@kunde.example")
    message = queue_marketing(session, clock, app, contact)
    preferences = f"/p/{signed(app, 'preferences', message)}"
    client = app.test_client()
    page = client.get(preferences)
    assert page.status_code == 200
    token = csrf_token(page.get_data(as_text=True))
    before = snapshot(session)

    # The preference centre refuses posts without their token, whatever they ask for.
    forged = client.post(preferences, data={"action": "unsubscribe", "reason": "x"})
    assert forged.status_code == 400
    forged = client.post(preferences, data={"action": "save", "first_name": "Mallory"})
    assert forged.status_code == 400
    assert snapshot(session) == before
    # With its token the same form works (the 400 was the CSRF check, not the form).
    ok = client.post(preferences, data={"action": "unsubscribe", "csrf_token": token})
    assert ok.status_code == 303

    # The one-click POST from another contact's mail needs none.
    other = subscriber(session, clock, email="fritz@kunde.example")
    other_message = queue_marketing(session, clock, app, other, key="m2")
    one_click = app.test_client().post(
        f"/u/{signed(app, 'unsubscribe', other_message)}", data=ONE_CLICK
    )
    assert one_click.status_code == 200
    assert is_suppressed(session, secret=secret(app), email="fritz@kunde.example")


def test_without_an_unsubscribe_mailbox_only_the_https_uri_is_offered(
    app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink
) -> None:
    contact = subscriber(session, clock, email="nina@kunde.example", first_name="Nina")
    queue_marketing(session, clock, app, contact)
    assert deliverer(app, session, clock, sink.url).run().sent == 1
    [received] = sink.received
    uris = re.findall(r"<([^>]+)>", received.message["List-Unsubscribe"])
    assert len(uris) == 1 and uris[0].startswith("https://nurture.test/u/")

"""The re-permission page: list, select, send; the mail through a real SMTP server, and the
confirmation that renews the consent."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.config import parse_smtp_url
from nurture.consent.ledger import Origin
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    SuppressionReason,
)
from nurture.consent.repermission import send_repermission
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.mail.delivery import Deliverer
from nurture.mail.models import Message
from nurture.mail.transports import SmtpTransport
from nurture.ops.heartbeat import register_worker
from tests.conftest import csrf_token, free_port, login
from tests.factories import PASSWORD, make_subscriber, make_topic, make_user
from tests.mail.conftest import SinkHandler, SmtpSink

URL = "/contacts/repermission"
# Consents granted at the test clock's start lapse 24 months later.
LAPSE = datetime(2028, 1, 5, 9, 0, tzinfo=UTC)
CONFIRM_LINK = re.compile(r"https://nurture\.test/confirm/[A-Za-z0-9_\-]+")


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


def _staff(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> None:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302


def _page(client: FlaskClient, query: str = "") -> str:
    response = client.get(URL + query, headers={"Accept-Language": "en"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _flashes(html: str) -> list[str]:
    found = re.findall(r'<div class="alert alert-(\w+)" role="\w+">\s*(.*?)\s*</div>', html, re.S)
    return [f"{kind}: {html_lib.unescape(text)}" for kind, text in found]


def _send(client: FlaskClient, page: str, *contact_ids: int) -> str:
    response = client.post(
        URL,
        data={"csrf_token": csrf_token(page), "within": "60", "contact": list(contact_ids)},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{URL}?within=60"
    return _page(client, "?within=60")


def _deliver(app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink) -> int:
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    state = app.extensions["nurture"]
    transport = SmtpTransport(parse_smtp_url(sink.url))
    return Deliverer(state, worker_id=worker.id, transport=transport).run().sent


def _text(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(part.get_content().split())


def _html(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html",))
    assert part is not None
    return part.get_content()


def test_a_marketer_sends_and_the_mail_arrives_and_its_confirmation_renews(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, sink: SmtpSink
) -> None:
    anna = make_subscriber(
        session, clock, email="anna@kunde.example", first_name="Anna", last_name="Berg"
    )
    ben = make_subscriber(session, clock, email="ben@kunde.example", language="en")
    make_topic(session, clock, "offers", name="Special offers")
    session.commit()
    # Logged in on the day: a session does not last the two years the consent does.
    clock.set(LAPSE - timedelta(days=30))
    _staff(client, session, clock, Role.MARKETER)

    page = _page(client)
    assert f'id="repermission-{anna.id}"' in page and f'id="repermission-{ben.id}"' in page
    assert "Anna Berg" in page and "anna@kunde.example" in page and "News" in page
    assert '<time datetime="2028-01-05T09:00:00+00:00">Jan 5, 2028</time>' in page
    assert "none since the consent" in page
    assert page.count('name="contact"') == 2 and " checked" not in page
    assert 'src="/static/js/repermission-select.js"' in page
    # Without JavaScript, "select all" is a link that reloads the page with every box ticked.
    assert _page(client, "?select=all").count(" checked>") == 2

    shown = _send(client, page, anna.id, ben.id)
    assert _flashes(shown) == ["success: 2 re-permission mails queued."]
    assert 'id="repermission-empty"' in shown  # asked once: not listed again

    assert _deliver(app, session, clock, sink) == 2
    mails = {r.rcpt_tos[0]: r.message for r in sink.received}
    german, english = mails["anna@kunde.example"], mails["ben@kunde.example"]
    assert german["Subject"] == "Möchten Sie weiterhin E-Mails von nurture erhalten?"
    text = _text(german)
    assert "Möchten Sie diese E-Mails weiterhin erhalten?" in text
    assert (
        "Ohne Ihre Bestätigung erhalten Sie ab dem 5. Januar 2028 keine E-Mails zu „News“" in text
    )
    assert english["Subject"] == "Would you like to keep receiving emails from nurture?"
    assert (
        "Without your confirmation we will stop sending you emails about “News” on January 5, "
        "2028" in _text(english)
    )
    (link,) = set(CONFIRM_LINK.findall(text))
    path = link.removeprefix("https://nurture.test")
    for mail in (german, english):
        # A request to confirm: no List-Unsubscribe block of marketing mail, no tracking.
        assert mail["List-Unsubscribe"] is None
        assert "<img" not in _html(mail)
        # Only the confirmation link (button and fallback), nothing else to click.
        hrefs = re.findall(r'href="([^"]+)"', _html(mail))
        assert len(hrefs) == 2 and len(set(hrefs)) == 1 and CONFIRM_LINK.fullmatch(hrefs[0])
    assert f'href="{link}"' in _html(german)

    # The link opens a page that changes nothing; its button confirms.
    visitor = app.test_client()
    confirm_page = visitor.get(path, headers={"Accept-Language": "de"})
    assert confirm_page.status_code == 200
    assert "Ja, ich möchte weiterhin E-Mails von nurture" in confirm_page.get_data(as_text=True)
    assert "Weiterhin unsere E-Mails erhalten" in confirm_page.get_data(as_text=True)
    before = session.scalars(select(ConsentEntry.action).order_by(ConsentEntry.id)).all()
    assert Action.RECONFIRMED not in before
    clock.advance(hours=3)
    done = visitor.post(
        path,
        data={"csrf_token": csrf_token(confirm_page.get_data(as_text=True))},
        headers={"User-Agent": "Mozilla/5.0 Firefox/140"},
    )
    assert done.status_code == 200
    assert "Ihre Einwilligung ist erneuert" in done.get_data(as_text=True)
    session.expire_all()
    renewal = session.scalars(
        select(ConsentEntry).where(ConsentEntry.contact_id == anna.id).order_by(ConsentEntry.id)
    ).all()[-1]
    assert (renewal.action, renewal.at, renewal.user_agent) == (
        Action.RECONFIRMED,
        clock.now(),
        "Mozilla/5.0 Firefox/140",
    )
    assert renewal.source.startswith("repermission:user:")
    news = make_topic(session, clock, "news")
    consent = session.get(Consent, (anna.id, news.id))
    assert consent is not None and consent.granted_at == clock.now()


def test_refusals_are_reported_with_their_reasons(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    settings_ = client.application.extensions["nurture"].settings
    asked = make_subscriber(session, clock, email="asked@kunde.example")
    gone = make_subscriber(session, clock, email="gone@kunde.example")
    fine = make_subscriber(session, clock, email="fine@kunde.example")
    session.commit()
    clock.set(LAPSE - timedelta(days=20))
    _staff(client, session, clock, Role.ADMIN)
    page = _page(client)
    # Meanwhile another marketer asked one of them, and another bounced hard.
    send_repermission(
        session,
        asked,
        topics=[make_topic(session, clock, "news")],
        now=clock.now(),
        settings=settings_,
        origin=Origin(source="user:99"),
    )
    suppress(
        session,
        secret=settings_.suppression_secret,
        email=gone.email,
        reason=SuppressionReason.HARD_BOUNCE,
        now=clock.now(),
    )
    session.commit()

    shown = _send(client, page, asked.id, gone.id, fine.id)
    assert _flashes(shown) == [
        "success: 1 re-permission mail queued.",
        "warning: 2 contacts were refused:",
        "error: asked@kunde.example was sent a re-permission mail on 2027-12-16 already. It "
        "goes out once; without an answer the consent lapses.",
        "error: gone@kunde.example is on the suppression list (unsubscribed, bounced or "
        "erased); no re-permission mail may go to this address.",
    ]
    session.expire_all()
    requests = session.scalars(select(ConsentRequest).order_by(ConsentRequest.id)).all()
    assert [r.contact_id for r in requests] == [asked.id, fine.id]


def test_only_admins_and_marketers_with_a_csrf_token_send(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    anna = make_subscriber(session, clock, email="anna@kunde.example")
    session.commit()
    clock.set(LAPSE - timedelta(days=20))
    assert client.get(URL).status_code == 302  # to the login page
    _staff(client, session, clock, Role.SALES)
    assert client.get(URL).status_code == 403
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post(URL, data={"contact": [anna.id], "csrf_token": token}).status_code == 403
    client.post("/logout", data={"csrf_token": token})

    _staff(client, session, clock, Role.MARKETER)
    page = _page(client)
    assert client.post(URL, data={"contact": [anna.id], "within": "60"}).status_code == 400
    shown = _send(client, page)
    assert _flashes(shown) == ["error: Select at least one contact to ask."]
    session.expire_all()
    assert session.scalars(select(Message)).all() == []


def test_the_window_paging_and_the_link_from_the_topics_page(
    client: FlaskClient, session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_subscriber(session, clock, email="first@kunde.example")
    clock.advance(days=40)
    second = make_subscriber(session, clock, email="second@kunde.example")
    session.commit()
    clock.set(LAPSE - timedelta(days=20))
    _staff(client, session, clock, Role.MARKETER)
    topics = client.get("/settings/topics").get_data(as_text=True)
    assert f'href="{URL}"' in topics

    default = _page(client)  # 60 days: only the first lapses in time
    assert "first@kunde.example" in default and "second@kunde.example" not in default
    wider = _page(client, "?within=90")
    assert "first@kunde.example" in wider and "second@kunde.example" in wider
    assert '<option value="90" selected>' in wider
    narrow = _page(client, "?within=30")
    assert "first@kunde.example" in narrow and "second@kunde.example" not in narrow
    # An unknown window falls back to the default instead of failing.
    assert "second@kunde.example" not in _page(client, "?within=100000&after=x")

    monkeypatch.setattr("nurture.consent.ui.repermission.PAGE_SIZE", 1)
    one = _page(client, "?within=90")
    assert "first@kunde.example" in one and "second@kunde.example" not in one
    assert f'href="{URL}?within=90&amp;after={first.id}"' in one
    two = _page(client, f"?within=90&after={first.id}")
    assert "second@kunde.example" in two and "first@kunde.example" not in two
    assert "Next page" not in two and "First page" in two
    assert session.get(Contact, second.id) is not None

"""The whole path in one process: outbox row → render → build → DKIM → real SMTP server."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import dkim
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.config import parse_smtp_url
from nurture.events import Event
from nurture.mail import outbox
from nurture.mail.delivery import Deliverer
from nurture.mail.gate import _CHECKS, register_gate_check
from nurture.mail.identity import LinkSigner
from nurture.mail.models import CapturedMail, Message, MessageState, Purpose
from nurture.mail.templates import TemplateDraft, create_template, latest_version
from nurture.mail.transports import CaptureTransport, SmtpTransport
from nurture.ops.heartbeat import register_worker
from tests.factories import make_subscriber
from tests.mail.conftest import SmtpSink

DRAFT = TemplateDraft(
    subject="{{ contact.first_name }}, wir vermissen Sie",
    html=(
        "<p>{{ salutation }},</p><p>Ihr Code für <strong>{{ contact.company }}</strong></p>"
        '<p><a href="https://shop.example/comeback">Zum Shop</a></p>'
    ),
)


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


def _deliverer(app, worker_id: str, transport, **overrides) -> Deliverer:  # type: ignore[no-untyped-def]
    state = app.extensions["nurture"]
    state.settings = state.settings.with_overrides(**overrides)
    return Deliverer(state, worker_id=worker_id, transport=transport)


def _queue(session: Session, clock: FrozenClock, app, n: int = 1, prefix: str = "anna"):  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings
    template = create_template(
        session,
        name=f"Comeback {prefix}",
        draft=DRAFT,
        now=clock.now(),
        imprint=settings.sender_imprint,
    )
    version = latest_version(session, template.id)
    assert version is not None
    messages = []
    for i in range(n):
        message = outbox.enqueue(
            session,
            key=f"{prefix}:{i}",
            purpose=Purpose.MARKETING,
            to_addr=f"{prefix}{i}@kunde.example",
            to_name=f"Anna Müller {i}",
            context={
                "contact": {"first_name": f"Anna{i}", "company": f"WB-{i}"},
                "salutation": "Sehr geehrte Frau Dr. Müller",
            },
            template_version_id=version.id,
            contact_id=make_subscriber(session, clock, email=f"{prefix}{i}@kunde.example").id,
            topic="news",
            now=clock.now(),
        )
        messages.append(message)
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    return messages, worker.id


def test_a_sent_mail_carries_every_header_and_verifies_with_dkim(
    app, session: Session, clock: FrozenClock, smtp_sink: SmtpSink, private_key: Path
) -> None:  # type: ignore[no-untyped-def]
    [message], worker_id = _queue(session, clock, app)
    deliverer = _deliverer(
        app,
        worker_id,
        SmtpTransport(parse_smtp_url(smtp_sink.url)),
        dkim_selector="nurture",
        dkim_domain="nurture.example",
        dkim_key_file=private_key,
        unsubscribe_mailto=True,
    )
    report = deliverer.run()
    session.expire_all()
    row = session.get(Message, message.id)
    assert row is not None
    assert (report.claimed, report.sent, row.reason) == (1, 1, None), row.smtp_response

    [received] = smtp_sink.received
    token = message.token
    assert received.mail_from == f"bounces+{token}@nurture.example"
    assert received.rcpt_tos == ["anna0@kunde.example"]
    mail = received.message
    assert mail["Subject"] == "Anna0, wir vermissen Sie"
    assert mail["From"].addresses[0].addr_spec == "news@nurture.example"
    assert mail["To"].addresses[0].display_name == "Anna Müller 0"
    assert mail["Message-ID"] == f"<{token}@nurture.example>"
    assert mail["Reply-To"] == f"reply+{token}@nurture.example"
    assert mail["Date"] is not None
    assert mail["List-Id"] == "<marketing.nurture.example>"
    assert mail["Feedback-ID"].endswith(":marketing:nurture:nurture.example")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = re.findall(r"<([^>]+)>", mail["List-Unsubscribe"])
    signed = https.rsplit("/u/", 1)[1]
    links = LinkSigner(app.extensions["nurture"].settings.secret_key, "https://nurture.test")
    assert (
        https.startswith("https://nurture.test/u/") and links.load("unsubscribe", signed) == token
    )
    assert mailto.startswith(f"mailto:unsubscribe+{token}@nurture.example")
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Sehr geehrte Frau Dr. Müller" in part and "WB-0" in part
        assert https in part.replace("&amp;", "&")  # the visible unsubscribe link
    assert "<strong" in html and "<p" not in text

    signature = mail["DKIM-Signature"]
    assert "list-unsubscribe-post" in signature.lower().replace(" ", "")
    public = _public_txt(private_key)
    assert dkim.verify(received.raw, dnsfunc=lambda name, timeout=5: public)

    session.expire_all()
    row = session.get(Message, message.id)
    assert row is not None and row.state == MessageState.SENT and row.subject == mail["Subject"]
    types = [
        e.type
        for e in session.scalars(
            select(Event).where(Event.message_id == message.id).order_by(Event.id)
        )
    ]
    assert types == ["queued", "sent"]


def test_capture_transport_keeps_the_raw_mail(app, session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    [message], worker_id = _queue(session, clock, app)
    state = app.extensions["nurture"]
    deliverer = Deliverer(
        state, worker_id=worker_id, transport=CaptureTransport(state.db, state.clock.now)
    )
    assert deliverer.run().sent == 1
    captured = session.scalars(select(CapturedMail)).one()
    assert captured.message_id == message.id
    assert captured.recipients == ["anna0@kunde.example"]
    assert captured.subject == "Anna0, wir vermissen Sie"
    assert b"WB-0" in captured.raw or b"WB-=\r\n0" in captured.raw


def test_refusals_and_rejections_are_recorded(app, session, clock, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    messages, worker_id = _queue(session, clock, app, n=3)
    blocked = messages[0].id
    hard = messages[1]
    hard_row = session.get(Message, hard.id)
    hard_row.to_addr = "hard-gone@kunde.example"
    session.commit()

    def no_consent(_session, message, _now, _settings):  # type: ignore[no-untyped-def]
        return "no_consent" if message.id == blocked else None

    register_gate_check(no_consent)
    try:
        deliverer = Deliverer(
            app.extensions["nurture"],
            worker_id=worker_id,
            transport=SmtpTransport(parse_smtp_url(smtp_sink.url)),
        )
        report = deliverer.run()
    finally:
        _CHECKS.remove(no_consent)
    assert (report.sent, report.skipped, report.failed) == (1, 1, 1)
    session.expire_all()
    skipped = session.get(Message, blocked)
    assert (skipped.state, skipped.reason) == (MessageState.CANCELLED, "no_consent")
    failed = session.get(Message, hard.id)
    assert (failed.state, failed.reason, failed.smtp_code) == (
        MessageState.FAILED,
        "hard_bounce",
        550,
    )
    bounce = session.scalars(select(Event).where(Event.type == "bounced")).one()
    assert bounce.contact_id == hard.contact_id
    assert [r.rcpt_tos for r in smtp_sink.received] == [[messages[2].to_addr]]


def test_a_message_is_sent_once_even_when_two_deliverers_run(app, session, clock, smtp_sink):  # type: ignore[no-untyped-def]
    _messages, worker_id = _queue(session, clock, app, n=30)
    other = register_worker(session, mode="worker", now=clock.now()).id
    session.commit()
    transport = SmtpTransport(parse_smtp_url(smtp_sink.url))
    state = app.extensions["nurture"]
    first = Deliverer(state, worker_id=worker_id, transport=transport)
    second = Deliverer(state, worker_id=other, transport=transport)
    import threading

    threads = [threading.Thread(target=d.run) for d in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    tokens = [r.message["Message-ID"] for r in smtp_sink.received]
    assert len(tokens) == len(set(tokens)) == 30


def test_global_and_per_domain_limits_hold_back_the_rest(app, session, clock, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    _messages, worker_id = _queue(session, clock, app, n=5)
    transport = SmtpTransport(parse_smtp_url(smtp_sink.url))
    # One lane makes the count exact (see outbox.domain_has_room for two lanes racing).
    per_domain = _deliverer(
        app, worker_id, transport, smtp_domain_rate_per_minute=2, smtp_connections=1
    )
    first = per_domain.run()
    assert (first.sent, first.postponed) == (2, 3)
    session.expire_all()
    waiting = session.scalars(select(Message).where(Message.state == MessageState.QUEUED)).all()
    assert len(waiting) == 3
    assert all(m.next_attempt_at == clock.now() + timedelta(minutes=1) for m in waiting)
    assert all(m.claimed_by is None and m.attempts == 0 for m in waiting)
    # Nothing more in the same minute; the next minute lets two more through.
    assert per_domain.run().sent == 0
    clock.advance(minutes=1, seconds=1)
    assert per_domain.run().sent == 2

    # The global cap counts every send in the last minute: two at 1:01 fill a cap of two.
    global_cap = _deliverer(
        app, worker_id, transport, smtp_domain_rate_per_minute=0, smtp_rate_per_minute=2
    )
    clock.advance(seconds=30)
    assert global_cap.run().claimed == 0
    clock.advance(seconds=31)
    assert global_cap.run().sent == 1
    assert len(smtp_sink.received) == 5

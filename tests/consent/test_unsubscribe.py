"""unsubscribe_all and the unsubscribe pages: what is withdrawn, suppressed, recorded, and that
it takes effect before the next send."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record, states
from nurture.consent.models import (
    Action,
    ConsentEntry,
    ConsentState,
    Suppression,
    SuppressionReason,
)
from nurture.consent.suppression import address_hash, is_suppressed
from nurture.consent.unsubscribe import resolve_link, unsubscribe_all
from nurture.events import Event
from nurture.mail import outbox
from nurture.mail.identity import LinkSigner
from nurture.mail.models import Message, MessageState, Purpose
from tests.consent.test_rfc8058 import (
    ONE_CLICK,
    deliverer,
    queue_marketing,
    signed,
    snapshot,
    subscriber,
)
from tests.consent.test_rfc8058 import sink as sink  # a fixture: the real SMTP server
from tests.factories import make_contact, make_topic
from tests.mail.conftest import SmtpSink

ORIGIN = Origin(source="link:1:unsubscribe", ip="198.51.100.7", user_agent="Mozilla/5.0")


def _settings(app: Flask):  # type: ignore[no-untyped-def]
    return app.extensions["nurture"].settings


def _ledger(session: Session, contact_id: int) -> list[tuple[str, str, str]]:
    rows = session.execute(
        select(ConsentEntry.action, ConsentEntry.source, ConsentEntry.ip)
        .where(ConsentEntry.contact_id == contact_id)
        .order_by(ConsentEntry.id)
    )
    return [(action.value, source, ip) for action, source, ip in rows]


def test_unsubscribe_all_withdraws_every_topic_suppresses_and_records_once(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="Anna.Schmidt@Kunde.example")
    offers = make_topic(session, clock, "offers", own_similar_products=True)
    record(
        session,
        contact_id=contact.id,
        topic=offers,
        action=Action.EXISTING_CUSTOMER,
        origin=Origin(source="user:1"),
        now=clock.now(),
    )
    pending = make_topic(session, clock, "events")
    record(
        session,
        contact_id=contact.id,
        topic=pending,
        action=Action.REQUESTED,
        origin=Origin(source="form:x"),
        now=clock.now(),
    )
    session.commit()
    clock.advance(hours=1)

    result = unsubscribe_all(
        session,
        contact,
        origin=ORIGIN,
        reason="  Zu viele Mails  ",
        now=clock.now(),
        settings=_settings(app),
    )
    session.commit()

    assert sorted(result.withdrawn) == ["events", "news", "offers", "tracking"]
    assert result.newly_suppressed and result.changed
    session.expire_all()
    by_slug = {
        topic.slug: states(session, contact.id)[topic.id].state
        for topic in (offers, pending, make_topic(session, clock, "news"))
    }
    # The existing-customer basis ends by objection, for good; consent is withdrawn.
    assert by_slug == {
        "offers": ConsentState.OBJECTED,
        "events": ConsentState.NONE,
        "news": ConsentState.NONE,
    }
    new_rows = session.scalars(
        select(ConsentEntry).where(ConsentEntry.at == clock.now().replace(microsecond=0))
    ).all()
    assert sorted(e.action.value for e in new_rows) == [
        "objected",
        "withdrawn",
        "withdrawn",
        "withdrawn",
    ]
    for entry in new_rows:
        assert (entry.source, entry.ip, entry.user_agent) == (
            "link:1:unsubscribe",
            "198.51.100.7",
            "Mozilla/5.0",
        )
        # The free-text reason is not evidence: it stays out of the ledger.
        assert entry.evidence == {"scope": "all"}
    suppression = session.scalars(select(Suppression)).one()
    assert suppression.reason is SuppressionReason.UNSUBSCRIBED
    # The hash of the normalised address: any spelling of it is blocked.
    assert suppression.address_hash == address_hash(
        _settings(app).suppression_secret, "anna.schmidt@kunde.example"
    )
    assert is_suppressed(
        session, secret=_settings(app).suppression_secret, email="ANNA.SCHMIDT@kunde.example"
    )
    event = session.scalars(select(Event).where(Event.type == "unsubscribed")).one()
    assert event.contact_id == contact.id
    assert event.payload["source"] == "link:1:unsubscribe"
    assert event.payload["reason"] == "Zu viele Mails"

    before = snapshot(session)
    again = unsubscribe_all(
        session, contact, origin=ORIGIN, reason=None, now=clock.now(), settings=_settings(app)
    )
    session.commit()
    assert (again.withdrawn, again.newly_suppressed, again.changed) == ((), False, False)
    assert snapshot(session) == before


def test_a_contact_without_any_consent_is_still_suppressed(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock, email="nie@kunde.example")
    result = unsubscribe_all(
        session, contact, origin=ORIGIN, reason=None, now=clock.now(), settings=_settings(app)
    )
    session.commit()
    assert (result.withdrawn, result.newly_suppressed) == ((), True)
    assert _ledger(session, contact.id) == []
    event = session.scalars(select(Event).where(Event.type == "unsubscribed")).one()
    assert event.payload == {"source": "link:1:unsubscribe", "reason": None, "topics": []}


def test_unsubscribing_takes_effect_before_the_next_send(
    app: Flask, session: Session, clock: FrozenClock, sink: SmtpSink
) -> None:
    contact = subscriber(session, clock, email="gerd@kunde.example")
    message = queue_marketing(session, clock, app, contact)
    response = app.test_client().post(f"/u/{signed(app, 'unsubscribe', message)}", data=ONE_CLICK)
    assert response.status_code == 200

    report = deliverer(app, session, clock, sink.url).run()

    assert (report.sent, report.skipped) == (0, 1)
    assert sink.received == []
    session.expire_all()
    row = session.get(Message, message.id)
    assert row is not None
    assert (row.state, row.reason) == (MessageState.CANCELLED, "suppressed")


def test_the_link_of_a_mail_without_a_contact_leads_nowhere(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    test_mail = outbox.enqueue(
        session,
        key="test:1",
        purpose=Purpose.TEST,
        to_addr="marketer@nurture.example",
        context={},
        builtin="optin_confirmation",
        now=clock.now(),
    )
    assert test_mail is not None
    session.commit()
    signer = LinkSigner(_settings(app).secret_key, "")
    assert (
        resolve_link(session, signer, "unsubscribe", signer.sign("unsubscribe", test_mail.token))
        is None
    )
    client = app.test_client()
    assert (
        client.post(f"/u/{signed(app, 'unsubscribe', test_mail)}", data=ONE_CLICK).status_code
        == 404
    )
    assert session.scalars(select(Suppression)).all() == []


def test_the_unsubscribe_page_speaks_the_contacts_language_and_offers_the_centre(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="hanna@kunde.example", language="de")
    message = queue_marketing(session, clock, app, contact)
    page = app.test_client().get(
        f"/u/{signed(app, 'unsubscribe', message)}", headers={"Accept-Language": "en"}
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<html lang="de">' in html
    assert page.headers["Cache-Control"] == "no-store"
    assert "hanna@kunde.example" in html
    assert f'href="/p/{signed(app, "preferences", message)}"' in html
    assert "<script" not in html and 'style="' not in html


def test_the_button_on_the_page_unsubscribes_with_the_reason_given(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="ida@kunde.example", language="en")
    message = queue_marketing(session, clock, app, contact)
    url = f"/u/{signed(app, 'unsubscribe', message)}"
    client = app.test_client()
    client.get(url)
    done = client.post(url, data=ONE_CLICK | {"reason": "Moving abroad"})
    assert done.status_code == 200
    assert "You will receive no more mail from us" in done.get_data(as_text=True)
    event = session.scalars(select(Event).where(Event.type == "unsubscribed")).one()
    assert event.payload["reason"] == "Moving abroad"
    assert event.payload["source"] == f"link:{message.id}:unsubscribe"
    again = client.get(url).get_data(as_text=True)
    assert "ida@kunde.example is already unsubscribed" in again

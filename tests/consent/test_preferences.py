"""The preference centre: every setting, what it records, and that the send gate honours pause
and weekly cap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record, states
from nurture.consent.models import Action, ConsentEntry, ConsentState
from nurture.consent.suppression import is_suppressed
from nurture.contacts.models import Contact
from nurture.events import Event
from nurture.mail.delivery import Deliverer
from nurture.mail.gate import refusal
from nurture.mail.models import Message, MessageState
from nurture.mail.transports import CaptureTransport
from nurture.ops.heartbeat import register_worker
from tests.conftest import csrf_token
from tests.consent.test_rfc8058 import queue_marketing, signed, snapshot, subscriber
from tests.factories import make_topic

# 2026-01-05 09:00 UTC is FrozenClock's start.
TOMORROW = "2026-01-06"


def _centre(app: Flask, session: Session, clock: FrozenClock, **fields: Any):  # type: ignore[no-untyped-def]
    contact = subscriber(
        session, clock, **({"email": "anna@kunde.example", "language": "en"} | fields)
    )
    message = queue_marketing(session, clock, app, contact)
    return contact, message, f"/p/{signed(app, 'preferences', message)}"


def _form(client: FlaskClient, url: str, **changes: Any) -> dict[str, Any]:
    """The centre's form as the page fills it, with ``changes`` applied."""
    html = client.get(url).get_data(as_text=True)
    data: dict[str, Any] = {
        "csrf_token": csrf_token(html),
        "action": "save",
        "first_name": _value(html, "first_name"),
        "last_name": _value(html, "last_name"),
        "company": _value(html, "company"),
        "city": _value(html, "city"),
        "language": _selected(html, "language"),
        "formality": _selected(html, "formality"),
        "frequency": _selected(html, "frequency"),
        "paused_until": _value(html, "paused_until"),
        "topics": _checked(html),
    }
    return data | changes


def _value(html: str, name: str) -> str:
    start = html.index(f'name="{name}"')
    tag = html[html.rindex("<", 0, start) : html.index(">", start)]
    return tag.split('value="', 1)[1].split('"', 1)[0] if 'value="' in tag else ""


def _selected(html: str, name: str) -> str:
    select_html = html[html.index(f'name="{name}"') :]
    select_html = select_html[: select_html.index("</select>")]
    for option in select_html.split("<option")[1:]:
        if option.lstrip().startswith("selected"):
            return option.split('value="', 1)[1].split('"', 1)[0]
    raise AssertionError(f"nothing selected in {name}")


def _checked(html: str) -> list[str]:
    boxes = [part for part in html.split("<input")[1:] if 'name="topics"' in part.split(">")[0]]
    return [
        box.split('value="', 1)[1].split('"', 1)[0]
        for box in boxes
        if " checked" in box.split(">")[0]
    ]


def _state(session: Session, contact: Contact, slug: str) -> ConsentState:
    session.expire_all()
    topic = make_topic(session, FrozenClock(), slug)
    return states(session, contact.id)[topic.id].state


# -- showing -------------------------------------------------------------------------------------


def test_the_centre_shows_topics_settings_and_history_in_the_contacts_language(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, _message, url = _centre(
        app, session, clock, language="de", first_name="Anna", company="Weber GmbH"
    )
    page = app.test_client().get(url, headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert '<html lang="de">' in html
    assert "anna@kunde.example" in html
    assert _checked(html) == ["news", "tracking"]
    assert _value(html, "first_name") == "Anna" and _value(html, "company") == "Weber GmbH"
    assert _selected(html, "frequency") == "" and _value(html, "paused_until") == ""
    # The ledger to the second, in UTC.
    assert '<time datetime="2026-01-05T09:00:00+00:00">2026-01-05 09:00:00</time>' in html
    assert "<script" not in html and 'style="' not in html
    assert contact.id  # the page works without login


def test_a_topic_that_is_off_is_shown_but_cannot_be_ticked(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, _message, url = _centre(app, session, clock)
    pending = make_topic(session, clock, "events", name="Events")
    record(
        session,
        contact_id=contact.id,
        topic=pending,
        action=Action.REQUESTED,
        origin=Origin(source="form:x"),
        now=clock.now(),
    )
    session.commit()
    html = app.test_client().get(url).get_data(as_text=True)
    box = html[html.index('value="events"') - 80 : html.index('value="events"') + 120]
    assert "disabled" in box and "checked" not in box
    assert "Waiting for your confirmation" in html


# -- saving each setting -------------------------------------------------------------------------


def test_saving_changes_each_setting_and_records_what_changed(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, message, url = _centre(app, session, clock, first_name="Ana")
    client = app.test_client()
    data = _form(
        client,
        url,
        topics=["tracking"],  # news switched off
        frequency="1",
        paused_until="2026-02-01",
        language="de",
        formality="informal",
        first_name="Anna",
        last_name="Weber",
        company="Weber & Söhne GmbH",
        city="Köln",
    )
    clock.advance(minutes=5)
    response = client.post(url, data=data, headers={"User-Agent": "Firefox/140"})
    assert response.status_code == 303
    assert response.headers["Location"] == url

    session.expire_all()
    saved = session.get(Contact, contact.id)
    assert saved is not None
    assert (saved.first_name, saved.last_name, saved.company, saved.city) == (
        "Anna",
        "Weber",
        "Weber & Söhne GmbH",
        "Köln",
    )
    assert (saved.language, saved.formality) == ("de", "informal")
    assert saved.max_mails_per_week == 1
    assert saved.paused_until == datetime(2026, 2, 1, tzinfo=UTC)
    assert _state(session, contact, "news") is ConsentState.NONE
    assert _state(session, contact, "tracking") is ConsentState.GRANTED
    entry = session.scalars(select(ConsentEntry).order_by(ConsentEntry.id.desc())).first()
    assert entry is not None
    assert (entry.action, entry.source, entry.ip, entry.user_agent) == (
        Action.WITHDRAWN,
        f"link:{message.id}:preferences",
        "127.0.0.1",
        "Firefox/140",
    )
    event = session.scalars(select(Event).where(Event.type == "contact_updated")).one()
    assert event.contact_id == contact.id
    assert event.payload == {
        "fields": [
            "city",
            "company",
            "first_name",
            "formality",
            "language",
            "last_name",
            "max_mails_per_week",
            "paused_until",
        ],
        "source": "preferences",
    }

    # The page after the redirect: the new values, in the language just chosen.
    page = client.get(url).get_data(as_text=True)
    assert '<html lang="de">' in page
    assert _checked(page) == ["tracking"]
    assert (_selected(page, "frequency"), _value(page, "paused_until")) == ("1", "2026-02-01")
    assert _selected(page, "formality") == "informal"


def test_switching_tracking_off_withdraws_the_tracking_consent(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, _message, url = _centre(app, session, clock)
    client = app.test_client()
    assert client.post(url, data=_form(client, url, topics=["news"])).status_code == 303
    assert _state(session, contact, "tracking") is ConsentState.NONE
    assert _state(session, contact, "news") is ConsentState.GRANTED
    # Nothing about the contact's own fields changed, so no contact_updated event.
    assert session.scalars(select(Event).where(Event.type == "contact_updated")).all() == []


def test_unticking_the_existing_customer_basis_is_an_objection(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, _message, url = _centre(app, session, clock)
    offers = make_topic(session, clock, "offers", own_similar_products=True)
    record(
        session,
        contact_id=contact.id,
        topic=offers,
        action=Action.EXISTING_CUSTOMER,
        origin=Origin(source="user:1"),
        now=clock.now(),
    )
    session.commit()
    client = app.test_client()
    data = _form(client, url)
    assert "offers" in data["topics"]
    data["topics"] = ["news", "tracking"]
    assert client.post(url, data=data).status_code == 303
    assert _state(session, contact, "offers") is ConsentState.OBJECTED


def test_saving_without_changes_records_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _contact, _message, url = _centre(app, session, clock)
    client = app.test_client()
    before = snapshot(session)
    response = client.post(url, data=_form(client, url), follow_redirects=True)
    assert response.status_code == 200
    assert "Nothing changed." in response.get_data(as_text=True)
    assert snapshot(session) == before


# -- what the centre refuses ---------------------------------------------------------------------


def test_a_topic_cannot_be_switched_on_from_the_centre(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, _message, url = _centre(app, session, clock)
    client = app.test_client()
    assert client.post(url, data=_form(client, url, topics=["tracking"])).status_code == 303
    before = snapshot(session)
    # A forged post ticks the withdrawn topic again (the page shows it disabled).
    response = client.post(
        url, data=_form(client, url, topics=["news", "tracking"], first_name="Changed")
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "“News” cannot be switched on here." in html
    assert "sign up through our signup form" in html
    assert snapshot(session) == before
    assert _state(session, contact, "news") is ConsentState.NONE
    session.expire_all()
    assert session.get(Contact, contact.id).first_name == ""  # type: ignore[union-attr]
    # A topic the contact never had is refused the same way.
    unknown = client.post(url, data=_form(client, url, topics=["tracking", "secret-topic"]))
    assert unknown.status_code == 422
    assert "“secret-topic” cannot be switched on here." in unknown.get_data(as_text=True)


def test_bad_values_are_refused_with_a_message_and_change_nothing(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _contact, _message, url = _centre(app, session, clock)
    client = app.test_client()
    before = snapshot(session)
    cases = {
        "The pause must end on a future day.": {"paused_until": "2026-01-05"},
        "A pause can last at most two years.": {"paused_until": "2028-06-01"},
        "Not a valid choice": {"frequency": "7"},
        "Field cannot be longer than 100 characters.": {"first_name": "x" * 101},
        "Not a valid date value.": {"paused_until": "next week"},
    }
    for message, change in cases.items():
        response = client.post(url, data=_form(client, url, **change))
        assert response.status_code == 422, change
        html = response.get_data(as_text=True)
        assert message in html, change
        assert "Nothing was saved." in html
    assert snapshot(session) == before


# -- unsubscribe from everything -----------------------------------------------------------------


def test_unsubscribing_from_everything_in_the_centre(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, message, url = _centre(app, session, clock)
    client = app.test_client()
    token = csrf_token(client.get(url).get_data(as_text=True))
    response = client.post(
        url, data={"action": "unsubscribe", "reason": "Too much mail", "csrf_token": token}
    )
    assert response.status_code == 303
    assert is_suppressed(
        session,
        secret=app.extensions["nurture"].settings.suppression_secret,
        email="anna@kunde.example",
    )
    assert _state(session, contact, "news") is ConsentState.NONE
    assert _state(session, contact, "tracking") is ConsentState.NONE
    event = session.scalars(select(Event).where(Event.type == "unsubscribed")).one()
    assert event.payload["reason"] == "Too much mail"
    assert event.payload["source"] == f"link:{message.id}:preferences"
    page = client.get(url).get_data(as_text=True)
    assert "You have been unsubscribed." in page
    assert "This address is unsubscribed" in page
    assert _checked(page) == []
    too_long = client.post(
        url, data={"action": "unsubscribe", "reason": "x" * 501, "csrf_token": token}
    )
    assert too_long.status_code == 422


def test_links_for_other_purposes_do_not_open_the_centre(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    _contact, message, url = _centre(app, session, clock)
    client = app.test_client()
    assert client.get(f"/p/{signed(app, 'unsubscribe', message)}").status_code == 404
    assert client.get(url[:-3] + "abc").status_code == 404
    assert client.get("/p/not-a-token").status_code == 404


# -- the send gate honours pause and weekly cap --------------------------------------------------


def _deliver(app: Flask, session: Session, clock: FrozenClock) -> None:
    state = app.extensions["nurture"]
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    transport = CaptureTransport(state.db, state.clock.now)
    Deliverer(state, worker_id=worker.id, transport=transport).run()
    session.expire_all()


def _outcome(session: Session, message: Message) -> tuple[MessageState, str | None]:
    row = session.get(Message, message.id)
    assert row is not None
    return row.state, row.reason


def test_the_gate_holds_mail_back_during_a_pause(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    contact, first, url = _centre(app, session, clock)
    client = app.test_client()
    assert client.post(url, data=_form(client, url, paused_until=TOMORROW)).status_code == 303
    _deliver(app, session, clock)
    assert _outcome(session, first) == (MessageState.CANCELLED, "paused")

    clock.set(datetime(2026, 1, 6, tzinfo=UTC))  # the day the pause ends
    later = queue_marketing(session, clock, app, contact, key="m2")
    settings = app.extensions["nurture"].settings
    assert refusal(session, later, clock.now(), settings) is None
    _deliver(app, session, clock)
    assert _outcome(session, later) == (MessageState.SENT, None)


def test_the_gate_honours_the_weekly_cap(app: Flask, session: Session, clock: FrozenClock) -> None:
    contact, first, url = _centre(app, session, clock)
    client = app.test_client()
    assert client.post(url, data=_form(client, url, frequency="1")).status_code == 303
    _deliver(app, session, clock)
    assert _outcome(session, first) == (MessageState.SENT, None)

    clock.advance(days=3)
    second = queue_marketing(session, clock, app, contact, key="m2")
    _deliver(app, session, clock)
    assert _outcome(session, second) == (MessageState.CANCELLED, "frequency_cap")

    clock.advance(days=4, seconds=1)
    third = queue_marketing(session, clock, app, contact, key="m3")
    _deliver(app, session, clock)
    assert _outcome(session, third) == (MessageState.SENT, None)

    # Two a week: a second mail within the week passes, a third does not.
    assert client.post(url, data=_form(client, url, frequency="2")).status_code == 303
    clock.advance(days=1)
    fourth = queue_marketing(session, clock, app, contact, key="m4")
    _deliver(app, session, clock)
    assert _outcome(session, fourth) == (MessageState.SENT, None)
    fifth = queue_marketing(session, clock, app, contact, key="m5")
    _deliver(app, session, clock)
    assert _outcome(session, fifth) == (MessageState.CANCELLED, "frequency_cap")

"""POST /api/v1/subscriptions: double opt-in from the customer's own website."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.models import (
    Action,
    ConsentEntry,
    ConsentRequest,
    ConsentText,
    SuppressionReason,
    TopicKind,
)
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.mail.models import Message
from tests.factories import grant_consent, make_contact, make_topic, make_user

URL = "/api/v1/subscriptions"
TEXT = "Ja, ich möchte den Newsletter erhalten. Abmeldung jederzeit möglich."


@pytest.fixture
def auth(session: Session, clock: FrozenClock) -> dict[str, str]:
    make_topic(session, clock, "news", name="Newsletter")
    make_topic(session, clock, "offers", name="Angebote")
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    user = make_user(session, clock, role=Role.MARKETER)
    _row, raw = create_token(session, user, "shop", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _body(**overrides: Any) -> dict[str, Any]:
    return {
        "email": "anna@kunde.example",
        "first_name": "Anna",
        "last_name": "Müller",
        "topics": ["news"],
        "consent_text": TEXT,
        "source": "footer-newsletter",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 Firefox/140",
    } | overrides


def _count(session: Session, model: type) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_subscription_is_accepted_as_a_pending_request(
    client: FlaskClient, session: Session, auth: dict[str, str]
) -> None:
    response = client.post(URL, json=_body(topics=["news", "offers"], tracking=True), headers=auth)
    assert response.status_code == 202
    request = session.scalars(select(ConsentRequest)).one()
    assert response.json == {"request_id": request.id, "status": "pending"}
    assert (request.source, request.ip, request.user_agent) == (
        "api:shop:footer-newsletter",
        "203.0.113.7",
        "Mozilla/5.0 Firefox/140",
    )
    text = session.get(ConsentText, request.text_id)
    assert text is not None and (text.text, text.language) == (TEXT, "de")
    entries = session.scalars(select(ConsentEntry).order_by(ConsentEntry.id)).all()
    assert [e.action for e in entries] == [Action.REQUESTED] * 3
    assert {(e.ip, e.user_agent, e.text_hash) for e in entries} == {
        ("203.0.113.7", "Mozilla/5.0 Firefox/140", text.sha256)
    }
    contact = session.scalars(select(Contact)).one()
    assert (contact.first_name, contact.last_name) == ("Anna", "Müller")
    assert _count(session, Message) == 1


def test_an_address_with_every_topic_granted_gets_already_confirmed(
    client: FlaskClient, session: Session, clock: FrozenClock, auth: dict[str, str]
) -> None:
    contact = make_contact(session, clock, email="anna@kunde.example")
    grant_consent(session, clock, contact, "news")
    session.commit()
    response = client.post(URL, json=_body(), headers=auth)
    assert (response.status_code, response.json) == (
        202,
        {"request_id": None, "status": "already_confirmed"},
    )
    assert _count(session, Message) == 0


def test_a_repeated_subscription_beyond_the_daily_mails_names_the_waiting_request(
    client: FlaskClient, session: Session, auth: dict[str, str]
) -> None:
    answers = [client.post(URL, json=_body(), headers=auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [202] * 4
    ids = [a.json["request_id"] for a in answers]  # type: ignore[index]
    assert ids[3] == ids[2] and len(set(ids[:3])) == 3
    assert {a.json["status"] for a in answers} == {"pending"}  # type: ignore[index]
    assert _count(session, Message) == 3


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (_body(topics=["news", "nope"]), {"topics"}),
        (_body(topics=[]), {"topics"}),
        (_body(email="anna@"), {"email"}),
        (_body(email=None), {"email"}),
        (_body(consent_text="  "), {"consent_text"}),
        ({k: v for k, v in _body().items() if k != "consent_text"}, {"consent_text"}),
        (_body(ip="999.1.1.1", tracking="yes"), {"ip", "tracking"}),
        (_body(lifecycle="customer", tags=["vip"]), {"lifecycle", "tags"}),
        (_body(gender="robot"), {"gender"}),
    ],
)
def test_invalid_subscriptions_get_422_with_field_errors(
    client: FlaskClient, session: Session, auth: dict[str, str], body: dict[str, Any], fields: set
) -> None:
    response = client.post(URL, json=body, headers=auth)
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["error"]["code"] == "validation_error"
    assert set(response.json["error"]["details"]) == fields
    assert _count(session, Contact) == 0 and _count(session, ConsentRequest) == 0


def test_unknown_topics_are_named(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(URL, json=_body(topics=["news", "zz", "aa"]), headers=auth)
    assert response.json["error"]["details"]["topics"] == "unknown topic: aa, zz"  # type: ignore[index]


def test_a_suppressed_address_is_refused(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, auth: dict[str, str]
) -> None:
    suppress(
        session,
        secret=app.extensions["nurture"].settings.suppression_secret,
        email="anna@kunde.example",
        reason=SuppressionReason.HARD_BOUNCE,
        now=clock.now(),
    )
    session.commit()
    response = client.post(URL, json=_body(), headers=auth)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "suppressed"  # type: ignore[index]
    assert _count(session, Contact) == 0


def test_sign_ups_per_ip_are_limited_with_429_and_retry_after(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, auth: dict[str, str]
) -> None:
    state = app.extensions["nurture"]
    state.settings = state.settings.with_overrides(signup_rate_per_ip_hour=3)
    codes = []
    for i in range(4):
        response = client.post(URL, json=_body(email=f"bot{i}@x.example"), headers=auth)
        codes.append(response.status_code)
        clock.advance(minutes=1)
    assert codes == [202, 202, 202, 429]
    assert int(response.headers["Retry-After"]) == 3600 - 180
    assert response.json["error"]["code"] == "rate_limited"  # type: ignore[index]
    other = client.post(URL, json=_body(email="human@x.example", ip="2001:db8::1"), headers=auth)
    assert other.status_code == 202
    assert _count(session, ConsentRequest) == 4


def test_only_admins_and_marketers_may_subscribe_people(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    assert client.post(URL, json=_body()).status_code == 401
    sales = make_user(session, clock, role=Role.SALES)
    _row, raw = create_token(session, sales, "sales", now=clock.now())
    session.commit()
    response = client.post(URL, json=_body(), headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 403

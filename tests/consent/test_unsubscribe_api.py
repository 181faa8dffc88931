"""POST /api/v1/contacts/{id}/unsubscribe."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.models import ConsentEntry
from nurture.consent.suppression import is_suppressed
from nurture.events import Event
from tests.consent.test_rfc8058 import snapshot, subscriber
from tests.factories import make_user


def _auth(session: Session, clock: FrozenClock, role: Role = Role.MARKETER) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "crm sync", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_unsubscribe_answers_with_the_consent_states_and_is_idempotent(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock, email="api@kunde.example")
    headers = _auth(session, clock)
    clock.advance(minutes=1)

    response = client.post(
        f"/api/v1/contacts/{contact.id}/unsubscribe",
        json={"reason": "asked by phone"},
        headers=headers,
    )
    assert response.status_code == 200
    since = clock.now().isoformat()
    assert response.json == {
        "contact_id": contact.id,
        "suppressed": True,
        "changed": True,
        "withdrawn": ["news", "tracking"],
        "consents": {
            "news": {"state": "none", "since": since},
            "tracking": {"state": "none", "since": since},
        },
    }
    assert is_suppressed(
        session,
        secret=app.extensions["nurture"].settings.suppression_secret,
        email="api@kunde.example",
    )
    sources = session.scalars(
        select(ConsentEntry.source).where(ConsentEntry.action == "withdrawn")
    ).all()
    assert sources == ["api:crm sync", "api:crm sync"]
    event = session.scalars(select(Event).where(Event.type == "unsubscribed")).one()
    assert event.payload["reason"] == "asked by phone"

    before = snapshot(session)
    again = client.post(f"/api/v1/contacts/{contact.id}/unsubscribe", headers=headers)
    assert again.status_code == 200
    assert again.json is not None
    assert (again.json["changed"], again.json["withdrawn"]) == (False, [])
    assert snapshot(session) == before


def test_unsubscribe_refuses_what_it_must(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = subscriber(session, clock)
    url = f"/api/v1/contacts/{contact.id}/unsubscribe"
    before = snapshot(session)
    assert client.post(url).status_code == 401
    sales = client.post(url, headers=_auth(session, clock, Role.SALES))
    assert sales.status_code == 403
    headers = _auth(session, clock)
    missing = client.post("/api/v1/contacts/999999/unsubscribe", headers=headers)
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "not_found"  # type: ignore[index]
    bad = client.post(url, json={"reason": 5}, headers=headers)
    assert bad.status_code == 422
    assert bad.json["error"]["details"] == {"reason": "must be a string"}  # type: ignore[index]
    long = client.post(url, json={"reason": "x" * 501}, headers=headers)
    assert long.status_code == 422
    text = client.post(url, data="reason=x", headers=headers | {"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert snapshot(session) == before


def test_the_route_is_in_the_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").json
    assert spec is not None
    operation = spec["paths"]["/contacts/{contact_id}/unsubscribe"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Unsubscribed"
    }
    assert "Unsubscribed" in spec["components"]["schemas"]

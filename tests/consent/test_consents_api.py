"""GET /api/v1/contacts/{id}/consents and GET /api/v1/suppressions."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.models import ConsentText, SuppressionReason
from nurture.consent.suppression import address_hash, suppress
from tests.consent.test_proof import CLICK, FORM, signed_up
from tests.factories import make_contact, make_user


def _auth(session: Session, clock: FrozenClock, role: Role) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_consents_are_the_ledger_and_the_current_state(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact, mail = signed_up(app, session, clock)
    text = session.scalars(select(ConsentText)).one()
    response = client.get(
        f"/api/v1/contacts/{contact.id}/consents", headers=_auth(session, clock, Role.SALES)
    )
    assert response.status_code == 200
    body = response.json
    assert body["contact_id"] == contact.id
    requested, confirmed = body["ledger"]
    assert {k: requested[k] for k in ("topic", "action", "at", "ip", "user_agent", "source")} == {
        "topic": "news",
        "action": "requested",
        "at": "2026-01-05T09:00:07Z",
        "ip": FORM.ip,
        "user_agent": FORM.user_agent,
        "source": "form:Xq3",
    }
    assert requested["text_hash"] == confirmed["text_hash"] == text.sha256
    assert {k: confirmed[k] for k in ("action", "at", "ip", "user_agent", "mail_message_id")} == {
        "action": "confirmed",
        "at": "2026-01-05T10:02:10Z",
        "ip": CLICK.ip,
        "user_agent": CLICK.user_agent,
        "mail_message_id": f"<{mail.token}@nurture.example>",
    }
    assert confirmed["request_id"] == requested["request_id"] is not None
    assert body["current"] == {
        "news": {
            "state": "granted",
            "since": "2026-01-05T10:02:10Z",
            "granted_at": "2026-01-05T10:02:10Z",
        }
    }


def test_consents_of_an_unknown_contact_are_404(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    auth = _auth(session, clock, Role.SALES)
    response = client.get("/api/v1/contacts/4711/consents", headers=auth)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert client.get("/api/v1/contacts/4711/consents").status_code == 401


def test_suppressions_are_hashes_and_reasons_paged_never_addresses(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    secret = app.extensions["nurture"].settings.suppression_secret
    addresses = [f"weg{i}@kunde.example" for i in range(5)]
    for i, address in enumerate(addresses):
        reason = SuppressionReason.HARD_BOUNCE if i % 2 else SuppressionReason.UNSUBSCRIBED
        suppress(session, secret=secret, email=address, reason=reason, now=clock.now())
        clock.advance(seconds=1)
    session.commit()
    auth = _auth(session, clock, Role.MARKETER)

    first = client.get("/api/v1/suppressions?limit=2", headers=auth)
    assert first.status_code == 200
    assert first.json["items"][0] == {
        "id": first.json["items"][0]["id"],
        "address_hash": address_hash(secret, addresses[0]),
        "reason": "unsubscribed",
        "created_at": "2026-01-05T09:00:00Z",
    }
    seen = [item["address_hash"] for item in first.json["items"]]
    after = first.json["next_after"]
    while after is not None:
        page = client.get(f"/api/v1/suppressions?limit=2&after={after}", headers=auth).json
        seen += [item["address_hash"] for item in page["items"]]
        after = page["next_after"]
    assert seen == [address_hash(secret, a) for a in addresses]

    bounced = client.get("/api/v1/suppressions?reason=hard_bounce", headers=auth).json
    assert [i["reason"] for i in bounced["items"]] == ["hard_bounce", "hard_bounce"]
    assert bounced["next_after"] is None
    everything = client.get("/api/v1/suppressions", headers=auth).get_data(as_text=True)
    assert "kunde.example" not in everything and "@" not in everything


def test_suppressions_refuse_bad_queries_and_sales(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    auth = _auth(session, clock, Role.ADMIN)
    for query in ("limit=x", "after=y", "reason=bored"):
        response = client.get(f"/api/v1/suppressions?{query}", headers=auth)
        assert response.status_code == 400, query
        assert response.json["error"]["code"] == "invalid_query"
    sales = client.get("/api/v1/suppressions", headers=_auth(session, clock, Role.SALES))
    assert sales.status_code == 403


def test_openapi_documents_the_consent_routes(app: Flask, client: FlaskClient) -> None:
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert set(paths["/topics"]) == {"get", "post"}
    assert set(paths["/contacts/{contact_id}/consents"]) == {"get"}
    assert set(paths["/contacts/{contact_id}/export"]) == {"get"}
    assert set(paths["/suppressions"]) == {"get"}
    assert "delete" in paths["/contacts/{contact_id}"]


def test_a_contact_not_on_the_list_has_no_consents_yet(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock)
    session.commit()
    response = client.get(
        f"/api/v1/contacts/{contact.id}/consents", headers=_auth(session, clock, Role.MARKETER)
    )
    assert response.json == {"contact_id": contact.id, "ledger": [], "current": {}}

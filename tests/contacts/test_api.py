from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.contacts.models import Contact
from nurture.events import Event
from tests.factories import make_user


def _auth(session: Session, clock: FrozenClock, role: Role = Role.MARKETER) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _token, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_post_creates_then_upserts_by_email(client: FlaskClient, session: Session, clock) -> None:
    auth = _auth(session, clock)
    created = client.post(
        "/api/v1/contacts",
        headers=auth,
        json={
            "email": "Anna.Mueller@Example.com",
            "first_name": "Anna",
            "last_name": "Müller",
            "gender": "Frau",
            "title": "Dr.",
            "customer_number": "K-1",
            "tags": ["VIP"],
        },
    )
    assert created.status_code == 201
    body = created.json
    assert body is not None
    assert created.headers["Location"] == f"/api/v1/contacts/{body['id']}"
    assert (body["email"], body["gender"], body["lifecycle"], body["source"]) == (
        "anna.mueller@example.com",
        "female",
        "lead",
        "api",
    )
    updated = client.post(
        "/api/v1/contacts",
        headers=auth,
        json={"email": "anna.mueller@example.com", "company": "Beispiel GmbH"},
    )
    assert updated.status_code == 200
    assert updated.json["id"] == body["id"] and updated.json["company"] == "Beispiel GmbH"  # type: ignore[index]
    assert session.scalar(select(func.count()).select_from(Contact)) == 1
    assert session.scalar(select(Event.type).where(Event.contact_id == body["id"])) == (
        "contact_created"
    )


def test_invalid_fields_are_a_422_naming_each_field(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    response = client.post(
        "/api/v1/contacts",
        headers=auth,
        json={"email": "anna@", "language": "fr", "birthday": "gestern"},
    )
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_error"
    assert response.json["error"]["details"] == {
        "email": "There must be something after the @-sign.",
        "language": "must be one of de, en",
        "birthday": "must be a date as YYYY-MM-DD",
    }
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_missing_email_is_refused(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/v1/contacts", headers=_auth(session, clock), json={"first_name": "Anna"}
    )
    assert response.status_code == 422
    assert response.json["error"]["details"] == {"email": "is required"}


def test_get_lookup_list_and_patch(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    ids = [
        client.post(
            "/api/v1/contacts",
            headers=auth,
            json={"email": f"k{i}@example.com", "last_name": f"Kunde{i}"},
        ).json["id"]
        for i in range(3)
    ]
    assert client.get(f"/api/v1/contacts/{ids[1]}", headers=auth).json["email"] == (
        "k1@example.com"
    )
    found = client.get("/api/v1/contacts?email=K2@Example.com", headers=auth).json
    assert [c["id"] for c in found["items"]] == [ids[2]]
    page = client.get("/api/v1/contacts?limit=2", headers=auth).json
    assert [c["id"] for c in page["items"]] == ids[:2] and page["next_after"] == ids[1]
    rest = client.get(f"/api/v1/contacts?limit=2&after={ids[1]}", headers=auth).json
    assert [c["id"] for c in rest["items"]] == ids[2:] and rest["next_after"] is None
    patched = client.patch(
        f"/api/v1/contacts/{ids[0]}", headers=auth, json={"lifecycle": "at_risk", "formality": "Du"}
    )
    assert patched.status_code == 200
    assert (patched.json["lifecycle"], patched.json["formality"]) == ("at_risk", "informal")
    assert client.get("/api/v1/contacts/999999", headers=auth).status_code == 404
    bad = client.get("/api/v1/contacts?limit=many", headers=auth)
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_query"


def test_sales_may_read_but_not_write(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    sales = _auth(session, clock, Role.SALES)
    refused = client.post("/api/v1/contacts", headers=sales, json={"email": "a@example.com"})
    assert refused.status_code == 403
    assert client.get("/api/v1/contacts", headers=sales).status_code == 200

"""/api/v1/segments: status codes, the 422 shape, roles, paging."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.contacts.custom_fields import create_field
from nurture.contacts.models import Contact, Segment
from tests.factories import make_contact, make_user

BERLIN = {"match": "all", "conditions": [{"field": "city", "op": "eq", "value": "Berlin"}]}


def _auth(session: Session, clock: FrozenClock, role: Role = Role.MARKETER) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _token, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _berliners(session: Session, clock: FrozenClock, count: int) -> list[int]:
    ids = [make_contact(session, clock, city="Berlin").id for _ in range(count)]
    make_contact(session, clock, city="Hamburg")
    session.commit()
    return ids


def test_create_read_update_delete(client: FlaskClient, session: Session, clock) -> None:
    auth = _auth(session, clock)
    _berliners(session, clock, 3)
    created = client.post(
        "/api/v1/segments", headers=auth, json={"name": "Berlin", "definition": BERLIN}
    )
    assert created.status_code == 201, created.json
    body = created.json
    assert body is not None
    assert created.headers["Location"] == f"/api/v1/segments/{body['id']}"
    assert (body["name"], body["definition"], body["count"]) == ("Berlin", BERLIN, 3)

    listed = client.get("/api/v1/segments", headers=auth).json
    assert [(s["id"], s["name"]) for s in listed["items"]] == [(body["id"], "Berlin")]  # type: ignore[index]
    assert "count" not in listed["items"][0]  # type: ignore[index]
    counted = client.get("/api/v1/segments?count=1", headers=auth).json
    assert counted["items"][0]["count"] == 3  # type: ignore[index]

    one = client.get(f"/api/v1/segments/{body['id']}", headers=auth)
    assert one.status_code == 200 and one.json["count"] == 3  # type: ignore[index]

    hamburg = {"conditions": [{"field": "city", "op": "eq", "value": "hamburg"}]}
    changed = client.put(
        f"/api/v1/segments/{body['id']}",
        headers=auth,
        json={"name": "Hamburg", "definition": hamburg},
    )
    assert changed.status_code == 200
    assert changed.json["count"] == 1  # type: ignore[index]
    assert changed.json["definition"] == {"match": "all", **hamburg}  # type: ignore[index]

    deleted = client.delete(f"/api/v1/segments/{body['id']}", headers=auth)
    assert deleted.status_code == 204
    assert client.get(f"/api/v1/segments/{body['id']}", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/segments/{body['id']}", headers=auth).status_code == 404
    assert session.scalar(select(func.count()).select_from(Segment)) == 0
    assert session.scalar(select(func.count()).select_from(Contact)) == 4


def test_invalid_definition_is_a_422_naming_each_path(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    response = client.post(
        "/api/v1/segments",
        headers=auth,
        json={
            "name": "x" * 101,
            "definition": {
                "conditions": [
                    {"field": "city", "op": "eq", "value": "Berlin"},
                    {"field": "city' OR 1=1 --", "op": "eq", "value": "x"},
                    {"event": "order", "op": "within_days", "days": 0},
                ]
            },
        },
    )
    assert response.status_code == 422
    assert response.json == {
        "error": {
            "code": "validation_error",
            "message": "The segment is invalid.",
            "details": {
                "name": "must be 1 to 100 characters long",
                "conditions.1.field": "is not a known field",
                "conditions.2.days": "must be a whole number from 1 to 3650",
            },
        }
    }
    missing = client.post("/api/v1/segments", headers=auth, json={"name": "A", "extra": 1})
    assert missing.status_code == 422
    assert missing.json["error"]["details"] == {  # type: ignore[index]
        "extra": "is not allowed here",
        "definition": "is required",
    }
    not_json = client.post("/api/v1/segments", headers=auth, data="name=x")
    assert not_json.status_code == 415
    assert session.scalar(select(func.count()).select_from(Segment)) == 0


def test_duplicate_names_are_refused(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    first = client.post(
        "/api/v1/segments", headers=auth, json={"name": "VIP", "definition": BERLIN}
    )
    assert first.status_code == 201
    again = client.post(
        "/api/v1/segments", headers=auth, json={"name": "vip", "definition": BERLIN}
    )
    assert again.status_code == 422
    assert again.json["error"]["details"] == {"name": "is already the name of another segment"}  # type: ignore[index]
    other = client.post(
        "/api/v1/segments", headers=auth, json={"name": "Other", "definition": BERLIN}
    ).json
    renamed = client.put(
        f"/api/v1/segments/{other['id']}",  # type: ignore[index]
        headers=auth,
        json={"name": "VIP", "definition": BERLIN},
    )
    assert renamed.status_code == 422


def test_auth_and_roles(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/v1/segments").status_code == 401
    body = {"name": "Berlin", "definition": BERLIN}
    assert client.post("/api/v1/segments", json=body).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert client.get("/api/v1/segments", headers=bad).status_code == 401

    sales = _auth(session, clock, Role.SALES)
    refused = client.post("/api/v1/segments", headers=sales, json=body)
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "forbidden"
    created = client.post("/api/v1/segments", headers=_auth(session, clock), json=body).json
    url = f"/api/v1/segments/{created['id']}"
    assert client.get("/api/v1/segments", headers=sales).status_code == 200
    assert client.get(url, headers=sales).status_code == 200
    assert client.get(f"{url}/contacts", headers=sales).status_code == 200
    assert client.put(url, headers=sales, json=body).status_code == 403
    assert client.delete(url, headers=sales).status_code == 403
    assert session.scalar(select(func.count()).select_from(Segment)) == 1


def test_contacts_are_keyset_paged(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    ids = _berliners(session, clock, 5)
    segment = client.post(
        "/api/v1/segments", headers=auth, json={"name": "Berlin", "definition": BERLIN}
    ).json
    url = f"/api/v1/segments/{segment['id']}/contacts"
    first = client.get(f"{url}?limit=2", headers=auth).json
    assert [item["id"] for item in first["items"]] == ids[:2]
    assert first["items"][0]["email"].endswith("@kunde.example")
    assert first["next_after"] == ids[1]
    second = client.get(f"{url}?limit=2&after={first['next_after']}", headers=auth).json
    assert [item["id"] for item in second["items"]] == ids[2:4]
    last = client.get(f"{url}?limit=2&after={second['next_after']}", headers=auth).json
    assert [item["id"] for item in last["items"]] == ids[4:]
    assert last["next_after"] is None
    assert client.get(f"{url}?limit=x", headers=auth).status_code == 400
    assert client.get("/api/v1/segments/999/contacts", headers=auth).status_code == 404


def test_a_stale_definition_is_reported_not_a_500(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    field = create_field(
        session, key="plan", label="Plan", kind="text", choices=[], now=clock.now()
    )
    session.commit()
    definition = {"conditions": [{"field": "custom.plan", "op": "eq", "value": "Pro"}]}
    segment = client.post(
        "/api/v1/segments", headers=auth, json={"name": "Pro", "definition": definition}
    ).json
    session.delete(field)
    session.commit()
    one = client.get(f"/api/v1/segments/{segment['id']}", headers=auth).json
    assert one["count"] is None
    assert one["errors"] == {"conditions.0.field": "is not a known field"}
    members = client.get(f"/api/v1/segments/{segment['id']}/contacts", headers=auth)
    assert members.status_code == 409
    assert members.json["error"]["code"] == "segment_invalid"

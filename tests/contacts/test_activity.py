from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.events import Event
from tests.factories import make_contact, make_user


def _auth(session: Session, clock: FrozenClock, role: Role = Role.MARKETER) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _token, raw = create_token(session, user, "erp", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _business_events(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Event).where(Event.type != "contact_created")
        )
        or 0
    )


def test_erp_events_are_recorded_once_and_appear_on_the_timeline(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    auth = _auth(session, clock)
    anna = make_contact(session, clock, email="anna@kunde.example")
    session.commit()
    batch = {
        "events": [
            {
                "type": "order",
                "id": "ORD-1",
                "email": "Anna@Kunde.example",
                "amount": "19.9",
                "currency": "eur",
                "occurred_at": "2026-01-02T10:00:00+01:00",
            },
            {
                "type": "complaint",
                "id": "C-7",
                "contact_id": anna.id,
                "reason": "Lieferung zu spät",
                "severity": "HIGH",
                "occurred_at": "2026-01-03T09:00:00Z",
            },
        ]
    }
    first = client.post("/api/v1/events", json=batch, headers=auth)
    assert first.status_code == 201
    assert first.json["recorded"] == 2 and first.json["duplicates"] == 0
    # The ERP resends the same batch after a timeout: nothing is recorded twice.
    again = client.post("/api/v1/events", json=batch, headers=auth)
    assert again.status_code == 200
    assert again.json == {"recorded": 0, "duplicates": 2, "ids": [None, None]}
    assert _business_events(session) == 2

    timeline = client.get(f"/api/v1/contacts/{anna.id}/timeline", headers=auth).json
    assert [e["type"] for e in timeline["items"]] == ["contact_created", "complaint", "order"]
    order = timeline["items"][2]
    assert order["payload"] == {"amount": "19.90", "currency": "EUR", "source": "api"}
    assert order["occurred_at"] == "2026-01-02T09:00:00+00:00"
    only_orders = client.get(f"/api/v1/contacts/{anna.id}/timeline?type=order", headers=auth)
    assert [e["type"] for e in only_orders.json["items"]] == ["order"]
    page = client.get(f"/api/v1/contacts/{anna.id}/timeline?limit=1", headers=auth).json
    rest = client.get(
        f"/api/v1/contacts/{anna.id}/timeline?limit=5&before={page['next_before']}",
        headers=auth,
    ).json
    assert [e["type"] for e in page["items"] + rest["items"]] == [
        "contact_created",
        "complaint",
        "order",
    ]


def test_one_invalid_event_refuses_the_whole_batch(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    make_contact(session, clock, email="anna@kunde.example")
    session.commit()
    response = client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "events": [
                {"type": "order", "email": "anna@kunde.example", "amount": "10", "currency": "EUR"},
                {
                    "type": "order",
                    "email": "anna@kunde.example",
                    "amount": "-5",
                    "currency": "Euro",
                },
                {"type": "refund", "email": "nobody@kunde.example"},
                {
                    "type": "note",
                    "email": "anna@kunde.example",
                    "text": "ok",
                    "occurred_at": "2026-01-02 10:00",
                },
            ]
        },
    )
    assert response.status_code == 422
    assert response.json["error"]["details"] == {
        "1.amount": "must be a decimal amount such as 19.90",
        "1.currency": "must be a three-letter currency code such as EUR",
        "2.type": "must be one of order, complaint, cancellation, expected_revenue, call, "
        "meeting, note",
        "2.email": "belongs to no contact; create the contact first",
        "3.occurred_at": "needs a time zone offset, e.g. +01:00 or Z",
    }
    assert _business_events(session) == 0


def test_future_events_and_wrong_shapes_are_refused(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(session, clock)
    anna = make_contact(session, clock)
    session.commit()
    future = client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "type": "call",
            "contact_id": anna.id,
            "text": "Rückruf",
            "occurred_at": "2999-01-01T00:00:00Z",
        },
    )
    assert future.json["error"]["details"] == {"0.occurred_at": "lies in the future"}
    assert client.post("/api/v1/events", headers=auth, json=[1, 2]).status_code == 400
    assert client.post("/api/v1/events", headers=auth, data="x").status_code == 415
    sales = _auth(session, clock, Role.SALES)
    assert client.post("/api/v1/events", headers=sales, json={"type": "note"}).status_code == 403
    assert client.get("/api/v1/contacts/999999/timeline", headers=auth).status_code == 404

"""The segment pages: list, builder (new, edit, preview), delete, roles (browser run: tests/e2e)."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts.custom_fields import create_field
from nurture.contacts.models import Segment
from nurture.contacts.segments import create_segment
from nurture.events import record_event
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_contact, make_user


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def _rows(**rows: dict[str, str]) -> dict[str, str]:
    """Form fields of condition rows: _rows(c0={"subject": "city", ...})."""
    return {f"{row}_{key}": value for row, fields in rows.items() for key, value in fields.items()}


def _post(client: FlaskClient, url: str, data: dict[str, Any], *, source: str | None = None):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get(source or "/contacts/segments/new").get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, "rows": "8", "match": "all"} | data)


def _contacts(session: Session, clock: FrozenClock) -> list[int]:
    """Two Berliners without a recent order, one with, one in Hamburg."""
    ids = [
        make_contact(
            session, clock, email=f"{name}@kunde.example", city=city, first_name=name.title()
        ).id
        for name, city in (
            ("anna", "Berlin"),
            ("bert", "Berlin"),
            ("carl", "Berlin"),
            ("dora", "Hamburg"),
        )
    ]
    record_event(session, "order", now=clock.now(), contact_id=ids[2])
    session.commit()
    return ids


BERLIN_NO_ORDER = _rows(
    c0={"subject": "city", "op": "eq", "value": "Berlin"},
    c1={"subject": "event:order", "op": "none_within_days", "days": "180"},
)


def test_marketer_creates_a_segment_and_sees_it_listed(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    anna, bert, _carl, _dora = _contacts(session, clock)
    new = client.get("/contacts/segments/new")
    assert new.status_code == 200
    html = new.get_data(as_text=True)
    assert 'name="c7_subject"' in html and 'name="c8_subject"' not in html
    assert "js/segment-builder.js" in html and "<script>" not in html and "style=" not in html

    response = _post(
        client,
        "/contacts/segments/new",
        {"name": "Berlin ohne Bestellung", "action": "save"} | BERLIN_NO_ORDER,
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    segment = session.scalar(select(Segment))
    assert segment is not None
    assert response.headers["Location"] == f"/contacts/segments/{segment.id}"
    assert (segment.name, segment.created_by_id) == ("Berlin ohne Bestellung", user.id)
    assert segment.definition == {
        "match": "all",
        "conditions": [
            {"field": "city", "op": "eq", "value": "Berlin"},
            {"event": "order", "op": "none_within_days", "days": 180},
        ],
    }

    edit = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Segment Berlin ohne Bestellung created." in edit
    assert 'value="Berlin"' in edit and 'value="180"' in edit
    assert '<option value="event:order" data-type="event" selected>' in edit
    assert "2 contacts match now." in edit
    assert f'href="/contacts/{anna}"' in edit and f'href="/contacts/{bert}"' in edit

    listing = client.get("/contacts/segments").get_data(as_text=True)
    assert "Berlin ohne Bestellung" in listing
    assert f"/contacts/segments?count={segment.id}" in listing
    counted = client.get(f"/contacts/segments?count={segment.id}").get_data(as_text=True)
    assert re.search(r'class="segment-count">2</', counted)


def test_editing_changes_name_rows_and_groups(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.ADMIN)
    _contacts(session, clock)
    segment = create_segment(
        session,
        name="Berlin",
        definition={"conditions": [{"field": "city", "op": "eq", "value": "Berlin"}]},
        user=None,
        now=clock.now(),
    )
    session.commit()
    url = f"/contacts/segments/{segment.id}"
    unchanged = _post(
        client,
        url,
        {"name": "Berlin", "action": "save"}
        | _rows(c0={"subject": "city", "op": "eq", "value": " Berlin "}),
        source=url,
    )
    assert unchanged.status_code == 302
    assert "Nothing changed." in client.get(url).get_data(as_text=True)

    grouped = _rows(
        c0={"subject": "lifecycle", "op": "in", "value": "lead, customer"},
        c2={"group": "1", "subject": "city", "op": "eq", "value": "Berlin"},
        c3={"group": "1", "subject": "city", "op": "eq", "value": "Hamburg"},
        c4={"subject": "created_at", "op": "within_days", "days": "30"},
    )
    saved = _post(client, url, {"name": "Städte", "action": "save"} | grouped, source=url)
    assert saved.status_code == 302
    session.expire_all()
    assert session.get(Segment, segment.id).definition == {  # type: ignore[union-attr]
        "match": "all",
        "conditions": [
            {"field": "lifecycle", "op": "in", "value": ["lead", "customer"]},
            {
                "any": [
                    {"field": "city", "op": "eq", "value": "Berlin"},
                    {"field": "city", "op": "eq", "value": "Hamburg"},
                ]
            },
            {"field": "created_at", "op": "within_days", "value": 30},
        ],
    }
    html = client.get(url).get_data(as_text=True)
    assert "4 contacts match now." in html
    assert 'value="lead, customer"' in html
    assert html.count('<option value="1" selected>') == 2
    assert 'id="c3_value" name="c3_value" value="30"' not in html  # days live in the days input
    assert 'id="c3_days" name="c3_days" value="30"' in html


def test_errors_are_shown_next_to_the_row_and_nothing_is_saved(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    _as(client, session, clock, Role.MARKETER)
    bad = _rows(
        c0={"subject": "city", "op": "eq", "value": "Berlin"},
        c3={"subject": "birthday", "op": "before", "value": "gestern"},
        c4={"subject": "event:complaint", "op": "at_least", "count": "0", "days": "90"},
        c5={"subject": "city') OR 1=1 --", "op": "eq", "value": "x"},
    )
    response = _post(client, "/contacts/segments/new", {"name": "", "action": "save"} | bad)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    rows = dict(re.findall(r'id="segment-row-(\d+)-errors">\s*<li>([^<]*)</li>', html))
    assert rows == {
        "3": "Value: must be a date as YYYY-MM-DD",
        "4": "Times: must be a whole number from 1 to 1000",
        "5": "Field: is not a known field",
    }
    assert "must be 1 to 100 characters long" in html
    assert "The segment was not saved; see the messages below." in html
    # What was typed stays in the form.
    assert 'value="gestern"' in html
    assert session.scalar(select(func.count()).select_from(Segment)) == 0


def test_preview_json_counts_and_samples(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    anna, bert, _carl, _dora = _contacts(session, clock)
    response = _post(client, "/contacts/segments/preview", BERLIN_NO_ORDER)
    assert response.status_code == 200
    assert response.json == {
        "count": 2,
        "summary": "2 contacts match now.",
        "sample": [
            {"id": anna, "email": "anna@kunde.example", "name": "Anna", "url": f"/contacts/{anna}"},
            {"id": bert, "email": "bert@kunde.example", "name": "Bert", "url": f"/contacts/{bert}"},
        ],
        "errors": {},
    }
    empty = _post(client, "/contacts/segments/preview", {})
    assert empty.json["count"] == 4  # type: ignore[index]
    assert len(empty.json["sample"]) == 4  # type: ignore[index]

    wrong = _post(
        client,
        "/contacts/segments/preview",
        {"match": "most"} | _rows(c1={"subject": "tags", "op": "eq", "value": "vip"}),
    )
    assert wrong.status_code == 422
    assert wrong.json == {
        "count": None,
        "summary": None,
        "sample": [],
        "errors": {
            "match": 'must be "all" or "any"',
            "row-1": "Condition: must be one of has, has_not",
        },
    }
    # A preview is a POST like any other: without the form's token it is refused.
    refused = client.post("/contacts/segments/preview", data={"rows": "1", "c0_subject": "city"})
    assert refused.status_code == 400


def test_without_javascript_preview_and_add_rows_rerender_the_form(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    _as(client, session, clock, Role.MARKETER)
    anna, *_ = _contacts(session, clock)
    previewed = _post(
        client, "/contacts/segments/new", {"name": "x", "action": "preview"} | BERLIN_NO_ORDER
    )
    assert previewed.status_code == 200
    html = previewed.get_data(as_text=True)
    assert "2 contacts match now." in html and f'href="/contacts/{anna}"' in html
    assert 'value="Berlin"' in html
    assert session.scalar(select(func.count()).select_from(Segment)) == 0

    more = _post(client, "/contacts/segments/new", {"name": "x", "action": "add"} | BERLIN_NO_ORDER)
    html = more.get_data(as_text=True)
    assert 'name="rows" value="12"' in html and 'name="c11_subject"' in html
    assert 'value="Berlin"' in html


def test_custom_fields_are_offered_and_typed(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    _as(client, session, clock, Role.MARKETER)
    create_field(
        session, key="plan", label="Tarif", kind="choice", choices=["Pro", "Free"], now=clock.now()
    )
    create_field(session, key="seats", label="Plätze", kind="number", choices=[], now=clock.now())
    make_contact(session, clock, custom={"plan": "Pro", "seats": 12})
    make_contact(session, clock, custom={"plan": "Free", "seats": 1})
    session.commit()
    html = client.get("/contacts/segments/new").get_data(as_text=True)
    assert '<option value="custom.plan" data-type="enum">Tarif</option>' in html
    assert '<datalist id="segment-values-custom-plan">' in html
    response = _post(
        client,
        "/contacts/segments/preview",
        _rows(
            c0={"subject": "custom.plan", "op": "in", "value": "pro, free"},
            c1={"subject": "custom.seats", "op": "gte", "value": "10"},
        ),
    )
    assert response.json["count"] == 1  # type: ignore[index]


def test_delete_asks_first(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    segment = create_segment(
        session, name="Weg", definition={"conditions": []}, user=None, now=clock.now()
    )
    session.commit()
    url = f"/contacts/segments/{segment.id}/delete"
    assert url in client.get(f"/contacts/segments/{segment.id}").get_data(as_text=True)
    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Really delete this segment?" in confirm.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Segment)) == 1
    token = csrf_token(confirm.get_data(as_text=True))
    deleted = client.post(url, data={"csrf_token": token})
    assert deleted.status_code == 302 and deleted.headers["Location"] == "/contacts/segments"
    assert "Segment Weg deleted." in client.get("/contacts/segments").get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Segment)) == 0
    assert client.get(url).status_code == 404


def test_sales_reads_the_list_but_cannot_build(client: FlaskClient, session, clock) -> None:
    segment = create_segment(
        session, name="Alle", definition={"conditions": []}, user=None, now=clock.now()
    )
    session.commit()
    assert client.get("/contacts/segments").status_code == 302  # to the login page
    _as(client, session, clock, Role.SALES)
    listing = client.get("/contacts/segments")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert "Alle" in html and "/contacts/segments/new" not in html
    token = csrf_token(html)
    assert client.get("/contacts/segments/new").status_code == 403
    form = {"csrf_token": token, "name": "Meins", "rows": "1", "action": "save"}
    assert client.post("/contacts/segments/new", data=form).status_code == 403
    assert client.post("/contacts/segments/preview", data=form).status_code == 403
    assert client.get(f"/contacts/segments/{segment.id}").status_code == 403
    assert client.post(f"/contacts/segments/{segment.id}/delete", data=form).status_code == 403
    assert session.scalar(select(func.count()).select_from(Segment)) == 1


def test_a_segment_whose_field_was_deleted_shows_the_row_to_fix(client, session, clock) -> None:  # type: ignore[no-untyped-def]
    _as(client, session, clock, Role.MARKETER)
    field = create_field(
        session, key="plan", label="Tarif", kind="text", choices=[], now=clock.now()
    )
    segment = create_segment(
        session,
        name="Pro",
        definition={"conditions": [{"field": "custom.plan", "op": "eq", "value": "Pro"}]},
        user=None,
        now=clock.now(),
    )
    session.delete(field)
    session.commit()
    html = client.get(f"/contacts/segments/{segment.id}").get_data(as_text=True)
    assert re.search(r'id="segment-row-0-errors">\s*<li>Field: is not a known field</li>', html)
    listing = client.get(f"/contacts/segments?count={segment.id}").get_data(as_text=True)
    assert "This segment names a field that no longer exists." in listing

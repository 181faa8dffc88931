"""The segment condition "consent for topic T": ops, validation, injection, builder, list, API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record
from nurture.consent.models import Action, Consent, Topic
from nurture.consent.segment_conditions import OPS
from nurture.contacts.custom_fields import definitions
from nurture.contacts.models import Contact, Segment
from nurture.contacts.segments import (
    SegmentError,
    builder_offers,
    compile_definition,
    count_matching,
    create_segment,
    validate_definition,
)
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, grant_consent, make_contact, make_topic, make_user

ORIGIN = Origin(source="test")
OP_CHOICES = "must be one of confirmed, existing_customer, any_basis, none, pending"


def _act(session: Session, clock: FrozenClock, contact: Contact, topic: Topic, *actions: Action):
    for action in actions:
        record(
            session,
            contact_id=contact.id,
            topic=topic,
            action=action,
            origin=ORIGIN,
            now=clock.now(),
        )


def _people(session: Session, clock: FrozenClock) -> dict[str, Contact]:
    """One contact per situation; "news" is not about own similar products, "shop" is."""
    news = make_topic(session, clock, "news", name="Newsletter")
    shop = make_topic(session, clock, "shop", name="Shop offers", own_similar_products=True)
    people = {
        name: make_contact(session, clock, email=f"{name}@kunde.example")
        for name in (
            "confirmed",
            "withdrawn",
            "pending",
            "customer",
            "objected",
            "never",
            "shopper",
            "expired",
        )
    }
    grant_consent(session, clock, people["confirmed"], "news")
    grant_consent(session, clock, people["withdrawn"], "news")
    _act(session, clock, people["withdrawn"], news, Action.WITHDRAWN)
    _act(session, clock, people["pending"], news, Action.REQUESTED)
    _act(session, clock, people["customer"], news, Action.EXISTING_CUSTOMER)
    _act(session, clock, people["objected"], news, Action.EXISTING_CUSTOMER, Action.OBJECTED)
    _act(session, clock, people["shopper"], shop, Action.EXISTING_CUSTOMER)
    _act(session, clock, people["expired"], news, Action.REQUESTED, Action.EXPIRED)
    session.commit()
    return people


def _matching(session: Session, clock: FrozenClock, *conditions: dict[str, Any]) -> set[str]:
    expr = compile_definition(
        {"conditions": list(conditions)},
        now=clock.now(),
        custom_fields=definitions(session),
        session=session,
    )
    emails = session.scalars(select(Contact.email).where(expr))
    return {email.split("@")[0] for email in emails}


def _errors(session: Session | None, *conditions: Any) -> dict[str, str]:
    with pytest.raises(SegmentError) as caught:
        validate_definition({"conditions": list(conditions)}, {}, session=session)
    return caught.value.errors


EVERYONE = {
    "confirmed",
    "withdrawn",
    "pending",
    "customer",
    "objected",
    "never",
    "shopper",
    "expired",
}


def test_each_op_matches_the_right_contacts(session: Session, clock: FrozenClock) -> None:
    _people(session, clock)
    news = {op: _matching(session, clock, {"consent": "news", "op": op}) for op in OPS}
    assert news == {
        "confirmed": {"confirmed"},
        "existing_customer": {"customer"},
        # §7(3) UWG covers only the sender's own similar products, which "news" is not about.
        "any_basis": {"confirmed"},
        "none": EVERYONE - {"confirmed"},
        "pending": {"pending"},
    }
    shop = {op: _matching(session, clock, {"consent": "shop", "op": op}) for op in OPS}
    assert shop == {
        "confirmed": set(),
        "existing_customer": {"shopper"},
        "any_basis": {"shopper"},
        "none": EVERYONE - {"shopper"},
        "pending": set(),
    }
    either = {
        "any": [{"consent": "news", "op": "any_basis"}, {"consent": "shop", "op": "any_basis"}]
    }
    assert _matching(session, clock, either) == {"confirmed", "shopper"}
    assert _matching(
        session,
        clock,
        {"consent": "news", "op": "none"},
        {"field": "email", "op": "starts_with", "value": "with"},
    ) == {"withdrawn"}


def test_any_basis_follows_the_ledger(session: Session, clock: FrozenClock) -> None:
    people = _people(session, clock)
    news = make_topic(session, clock, "news")
    condition = {"consent": "news", "op": "any_basis"}
    _act(session, clock, people["confirmed"], news, Action.WITHDRAWN)
    _act(session, clock, people["pending"], news, Action.CONFIRMED)
    _act(session, clock, people["withdrawn"], news, Action.RECONFIRMED)
    session.commit()
    assert _matching(session, clock, condition) == {"pending", "withdrawn"}
    assert count_matching(session, {"conditions": [condition]}, now=clock.now()) == 2


def test_unknown_topics_and_ops_are_refused_at_their_path(
    session: Session, clock: FrozenClock
) -> None:
    assert _errors(session, {"consent": "news", "op": "confirmed"}) == {
        "conditions.0.consent": "is not a known topic; there are no topics yet"
    }
    _people(session, clock)
    assert _errors(
        session,
        {"consent": "news", "op": "confirmed"},
        {"consent": "nope", "op": "confirmed"},
        {"consent": "news", "op": "granted"},
        {"consent": "news"},
        {"consent": "news", "op": "pending", "value": "x"},
        {"any": [{"consent": "Newsletter", "op": "none"}]},
    ) == {
        "conditions.1.consent": "is not a known topic; use one of news, shop",
        "conditions.2.op": OP_CHOICES,
        "conditions.3.op": OP_CHOICES,
        "conditions.4.value": "is not allowed here",
        "conditions.5.any.0.consent": "is not a known topic; use one of news, shop",
    }
    # What is stored: exactly the two keys.
    assert validate_definition(
        {"conditions": [{"consent": "shop", "op": "any_basis"}]}, {}, session=session
    ) == {"match": "all", "conditions": [{"consent": "shop", "op": "any_basis"}]}
    with pytest.raises(SegmentError) as caught:
        create_segment(
            session,
            name="Nope",
            definition={"conditions": [{"consent": "nope", "op": "confirmed"}]},
            user=None,
            now=clock.now(),
        )
    assert caught.value.errors == {
        "conditions.0.consent": "is not a known topic; use one of news, shop"
    }
    # Without a session only the form of the slug can be judged.
    assert validate_definition({"conditions": [{"consent": "nope", "op": "none"}]}, {})
    assert _errors(None, {"consent": "Not A Slug", "op": "none"}) == {
        "conditions.0.consent": "is not a known topic"
    }


PAYLOADS = [
    "news' OR '1'='1",
    "news'; DELETE FROM consents; --",
    'news" OR 1=1 --',
    "%",
    "news%",
    "_ews",
    "news\x00",
    "NEWS",
    " news",
    "",
    "x" * 5000,
    123,
    None,
    True,
    ["news"],
    {"$ne": None},
]


def test_injection_payloads_are_refused_or_matched_literally(
    session: Session, clock: FrozenClock
) -> None:
    _people(session, clock)
    consents = session.scalar(select(func.count()).select_from(Consent))
    for payload in PAYLOADS:
        errors = _errors(session, {"consent": payload, "op": "none"})
        assert errors == {"conditions.0.consent": "is not a known topic; use one of news, shop"}
        errors = _errors(None, {"consent": payload, "op": "none"})
        assert errors == {"conditions.0.consent": "is not a known topic"}
        assert _errors(session, {"consent": "news", "op": payload}) == {
            "conditions.0.op": OP_CHOICES
        }
    for op in ("confirmed' OR 1=1 --", "none OR 1=1", "Confirmed", " none"):
        assert _errors(session, {"consent": "news", "op": op}) == {"conditions.0.op": OP_CHOICES}

    # A topic whose slug looks like SQL (only possible below create_topic) is matched literally.
    odd = "o'b%_--"
    other = make_contact(session, clock, email="odd@kunde.example")
    grant_consent(session, clock, other, odd)
    session.commit()
    assert _matching(session, clock, {"consent": odd, "op": "confirmed"}) == {"odd"}
    expr = compile_definition(
        {"conditions": [{"consent": odd, "op": "confirmed"}]},
        now=clock.now(),
        custom_fields={},
        session=session,
    )
    assert odd not in str(expr.compile(dialect=session.get_bind().dialect))
    assert session.scalar(select(func.count()).select_from(Consent)) == (consents or 0) + 1


# -- the builder, the contacts list and the API ---------------------------------------------------


def _as_marketer(client: FlaskClient, session: Session, clock: FrozenClock) -> None:
    user = make_user(session, clock, role=Role.MARKETER)
    assert login(client, user.email, PASSWORD).status_code == 302


def _post(client: FlaskClient, url: str, data: dict[str, str]):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get("/contacts/segments/new").get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, "rows": "8", "match": "all"} | data)


def test_the_builder_offers_consent_and_saves_such_a_segment(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    assert "consent" in builder_offers()
    people = _people(session, clock)
    _as_marketer(client, session, clock)
    html = client.get("/contacts/segments/new").get_data(as_text=True)
    assert '<optgroup label="Consent">' in html
    assert '<option value="consent:news" data-type="consent">Newsletter</option>' in html
    assert '<option value="consent:shop" data-type="consent">Shop offers</option>' in html
    assert '<optgroup label="Consent" data-type="consent">' in html
    for op in OPS:
        assert f'<option value="{op}" data-inputs="">' in html
    assert '<option value="any_basis" data-inputs="">any valid basis</option>' in html
    assert "Suppressed addresses, dormant consents and paused contacts are not left out" in html

    rows = {
        "c0_subject": "consent:news",
        "c0_op": "none",
        "c1_group": "1",
        "c1_subject": "consent:shop",
        "c1_op": "any_basis",
        "c2_group": "1",
        "c2_subject": "consent:news",
        "c2_op": "pending",
    }
    preview = _post(client, "/contacts/segments/preview", rows)
    assert preview.status_code == 200 and preview.json is not None
    assert preview.json["count"] == 2
    assert [c["email"] for c in preview.json["sample"]] == [
        "pending@kunde.example",
        "shopper@kunde.example",
    ]

    saved = _post(client, "/contacts/segments/new", {"name": "Erreichbar", "action": "save"} | rows)
    assert saved.status_code == 302, saved.get_data(as_text=True)
    segment = session.scalar(select(Segment))
    assert segment is not None
    assert segment.definition == {
        "match": "all",
        "conditions": [
            {"consent": "news", "op": "none"},
            {"any": [{"consent": "shop", "op": "any_basis"}, {"consent": "news", "op": "pending"}]},
        ],
    }
    edit = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert '<option value="consent:news" data-type="consent" selected>Newsletter</option>' in edit
    assert '<option value="consent:shop" data-type="consent" selected>Shop offers</option>' in edit
    assert '<option value="pending" data-inputs="" selected>' in edit
    assert "2 contacts match now." in edit
    assert f'href="/contacts/{people["pending"].id}"' in edit
    assert f'href="/contacts/{people["shopper"].id}"' in edit


def test_the_builder_names_an_unknown_topic_in_its_row(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _people(session, clock)
    _as_marketer(client, session, clock)
    rows = {"c0_subject": "city", "c0_op": "eq", "c0_value": "Berlin"} | {
        "c1_subject": "consent:news' OR 1=1 --",
        "c1_op": "confirmed",
    }
    refused = _post(client, "/contacts/segments/new", {"name": "Kaputt", "action": "save"} | rows)
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    errors = re.search(r'id="segment-row-1-errors">(.*?)</ul>', html, re.S)
    assert errors is not None
    assert "Field: is not a known topic; use one of news, shop" in errors.group(1)
    assert session.scalar(select(func.count()).select_from(Segment)) == 0
    bad_op = _post(
        client, "/contacts/segments/preview", {"c0_subject": "consent:news", "c0_op": "eq"}
    )
    assert bad_op.status_code == 422 and bad_op.json is not None
    assert bad_op.json["errors"] == {"row-0": f"Condition: {OP_CHOICES}"}


def test_the_contacts_list_filtered_by_a_consent_segment(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _people(session, clock)
    _as_marketer(client, session, clock)
    segment = create_segment(
        session,
        name="Pending or shop",
        definition={
            "match": "any",
            "conditions": [
                {"consent": "news", "op": "pending"},
                {"consent": "shop", "op": "existing_customer"},
            ],
        },
        user=None,
        now=clock.now(),
    )
    session.commit()
    html = client.get(f"/contacts?segment={segment.id}").get_data(as_text=True)
    shown = set(re.findall(r"<td[^>]*>([a-z]+)@kunde\.example</td>", html))
    assert shown == {"pending", "shopper"}


def test_the_api_validates_and_counts_consent_segments(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _people(session, clock)
    user = make_user(session, clock, role=Role.MARKETER)
    _token, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    auth = {"Authorization": f"Bearer {raw}"}
    definition = {"conditions": [{"consent": "news", "op": "none"}]}
    created = client.post(
        "/api/v1/segments", headers=auth, json={"name": "Ohne", "definition": definition}
    )
    assert created.status_code == 201, created.json
    assert created.json is not None and created.json["count"] == 7
    members = client.get(f"/api/v1/segments/{created.json['id']}/contacts", headers=auth).json
    assert members is not None
    assert {item["email"].split("@")[0] for item in members["items"]} == EVERYONE - {"confirmed"}
    refused = client.post(
        "/api/v1/segments",
        headers=auth,
        json={"name": "Nope", "definition": {"conditions": [{"consent": "x", "op": "none"}]}},
    )
    assert refused.status_code == 422 and refused.json is not None
    assert refused.json["error"]["details"] == {
        "conditions.0.consent": "is not a known topic; use one of news, shop"
    }

"""Topics (service, settings page, API), the signup-forms part of the page, and the
existing-customer exception of §7(3) UWG."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import create_token
from nurture.clock import FrozenClock
from nurture.consent.existing_customers import record_existing_customer, record_objection
from nurture.consent.ledger import ConsentError, Origin, states
from nurture.consent.models import (
    Action,
    ConsentEntry,
    ConsentState,
    ConsentText,
    SignupForm,
    Topic,
    TopicKind,
)
from nurture.consent.signup_forms import create_form
from nurture.consent.topics import TopicError, create_topic, list_topics
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_contact, make_topic, make_user

SHOP = Origin(source="user:1")
NOTICE = "Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen."


def _topic(session: Session, clock: FrozenClock, **fields: object) -> Topic:
    values: dict[str, object] = {
        "name": "Newsletter",
        "slug": "news",
        "kind": "marketing",
        "own_similar_products": False,
        "description": "",
        "now": clock.now(),
    }
    return create_topic(session, **(values | fields))  # type: ignore[arg-type]


# -- service -------------------------------------------------------------------------------


def test_create_topic_cleans_and_lists_marketing_first(
    session: Session, clock: FrozenClock
) -> None:
    _topic(session, clock, name="  Tracking ", slug="tracking", kind=TopicKind.TRACKING)
    news = _topic(session, clock, name="Newsletter   Herbst", description=" Monatlich ")
    _topic(session, clock, name="Angebote", slug="offers", own_similar_products=True)
    assert (news.name, news.description, news.kind) == (
        "Newsletter Herbst",
        "Monatlich",
        TopicKind.MARKETING,
    )
    assert [t.slug for t in list_topics(session)] == ["offers", "news", "tracking"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "  "}, "name", "Give the topic a name."),
        ({"name": "x" * 101}, "name", "The name is longer than 100 characters."),
        ({"slug": "News"}, "slug", "The slug must start with a lower-case letter"),
        ({"slug": "1news"}, "slug", "The slug must start with a lower-case letter"),
        ({"slug": "news letter"}, "slug", "The slug must start with a lower-case letter"),
        ({"kind": "sms"}, "kind", "The kind must be marketing or tracking."),
        (
            {"kind": "tracking", "own_similar_products": True},
            "own_similar_products",
            "Only a marketing topic can be about the sender's own similar products.",
        ),
        ({"description": "x" * 2001}, "description", "The description is longer than 2000"),
    ],
)
def test_create_topic_refuses_bad_input(
    session: Session, clock: FrozenClock, fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(TopicError) as caught:
        _topic(session, clock, **fields)
    assert caught.value.field == field
    assert str(caught.value).startswith(message)


def test_a_slug_is_taken_once(session: Session, clock: FrozenClock) -> None:
    _topic(session, clock)
    with pytest.raises(TopicError, match="A topic with the slug news exists already"):
        _topic(session, clock, name="Other")
    assert len(list_topics(session)) == 1


# -- existing-customer exception ---------------------------------------------------------


def test_existing_customer_basis_is_recorded_with_sale_and_notice(
    session: Session, clock: FrozenClock
) -> None:
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    contact = make_contact(session, clock)
    entry = record_existing_customer(
        session,
        contact,
        shop,
        sale_reference="order 2026-4711",
        notice_text=NOTICE,
        origin=SHOP,
        now=clock.now(),
    )
    notice = session.scalars(select(ConsentText).where(ConsentText.text == NOTICE)).one()
    assert (entry.action, entry.text_hash, entry.evidence) == (
        Action.EXISTING_CUSTOMER,
        notice.sha256,
        {"sale": "order 2026-4711", "notice": notice.sha256},
    )
    state = states(session, contact.id)[shop.id]
    assert (state.state, state.granted_at) == (ConsentState.EXISTING_CUSTOMER, clock.now())


def test_existing_customer_basis_needs_an_own_similar_products_topic(
    session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock)
    news = make_topic(session, clock, "news")
    tracking = make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    for topic in (news, tracking):
        with pytest.raises(ConsentError, match="covers only topics about the sender's own"):
            record_existing_customer(
                session,
                contact,
                topic,
                sale_reference="order 1",
                notice_text=NOTICE,
                origin=SHOP,
                now=clock.now(),
            )
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    with pytest.raises(ConsentError, match="Name the sale"):
        record_existing_customer(
            session,
            contact,
            shop,
            sale_reference=" ",
            notice_text=NOTICE,
            origin=SHOP,
            now=clock.now(),
        )
    with pytest.raises(ConsentError, match="notice of the right to object"):
        record_existing_customer(
            session,
            contact,
            shop,
            sale_reference="order 1",
            notice_text="",
            origin=SHOP,
            now=clock.now(),
        )
    assert session.scalars(select(ConsentEntry)).all() == []


def test_an_objection_ends_the_existing_customer_basis_for_good(
    session: Session, clock: FrozenClock
) -> None:
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    contact = make_contact(session, clock)
    record_existing_customer(
        session,
        contact,
        shop,
        sale_reference="order 1",
        notice_text=NOTICE,
        origin=SHOP,
        now=clock.now(),
    )
    clock.advance(days=3)
    record_objection(session, contact, shop, origin=Origin(source="link:abc"), now=clock.now())
    assert states(session, contact.id)[shop.id].state is ConsentState.OBJECTED
    clock.advance(days=30)
    with pytest.raises(ConsentError, match="This person objected"):
        record_existing_customer(
            session,
            contact,
            shop,
            sale_reference="order 2",
            notice_text=NOTICE,
            origin=SHOP,
            now=clock.now(),
        )
    actions = session.scalars(select(ConsentEntry.action).order_by(ConsentEntry.id)).all()
    assert actions == [Action.EXISTING_CUSTOMER, Action.OBJECTED]


# -- settings page -------------------------------------------------------------------------


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> None:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302


def test_marketers_see_topics_and_forms_but_cannot_add(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    news = make_topic(session, clock, "news", name="Newsletter")
    create_form(
        session,
        name="Footer DE",
        topics=[news],
        text="Ja, Newsletter.",
        language="de",
        ask_tracking=False,
        now=clock.now(),
    )
    session.commit()
    _as(client, session, clock, Role.MARKETER)
    page = client.get("/settings/topics")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="topic-news"' in html and "<code>news</code>" in html
    assert "Footer DE" in html and "/s/" in html and "/embed" in html
    assert 'id="admin-topic-form"' not in html and 'id="admin-signup-form"' not in html
    token = csrf_token(html)
    refused = client.post("/settings/topics", data={"csrf_token": token, "name": "X", "slug": "x"})
    assert refused.status_code == 403
    assert client.post("/settings/topics/forms", data={"csrf_token": token}).status_code == 403
    assert [t.slug for t in list_topics(session)] == ["news"]


def test_sales_cannot_open_the_settings_page(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.SALES)
    assert client.get("/settings/topics").status_code == 403


def test_admin_adds_a_topic_and_sees_errors_at_the_field(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    page = client.get("/settings/topics")
    assert 'id="admin-topics-empty"' in page.get_data(as_text=True)
    token = csrf_token(page.get_data(as_text=True))
    data = {
        "csrf_token": token,
        "name": "Angebote",
        "slug": "offers",
        "kind": "marketing",
        "own_similar_products": "y",
        "description": "Rabatte für Stammkunden",
    }
    done = client.post("/settings/topics", data=data, follow_redirects=True)
    assert done.status_code == 200
    assert "Topic Angebote (offers) added." in done.get_data(as_text=True)
    topic = session.scalars(select(Topic)).one()
    assert (topic.slug, topic.own_similar_products, topic.description) == (
        "offers",
        True,
        "Rabatte für Stammkunden",
    )

    again = client.post("/settings/topics", data=data | {"name": "Andere"})
    html = again.get_data(as_text=True)
    assert again.status_code == 422
    assert "A topic with the slug offers exists already." in html
    assert 'aria-invalid="true"' in html


def test_admin_adds_a_signup_form_on_the_same_page(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    news = make_topic(session, clock, "news", name="Newsletter")
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    session.commit()
    _as(client, session, clock, Role.ADMIN)
    html = client.get("/settings/topics").get_data(as_text=True)
    # Only marketing topics are offered as checkboxes.
    assert f'value="{news.id}"' in html and 'type="checkbox"' in html
    token = csrf_token(html)
    form = {
        "form-csrf_token": token,
        "form-name": "Shop footer",
        "form-text": "Ja, ich möchte den Newsletter.\r\nAbmeldung jederzeit.",
        "form-language": "de",
        "form-ask_tracking": "y",
    }
    refused = client.post("/settings/topics/forms", data=form)
    assert refused.status_code == 422
    assert "A form offers at least one topic" in refused.get_data(as_text=True)

    done = client.post("/settings/topics/forms", data=form | {"form-topics": str(news.id)})
    assert done.status_code == 302 and done.headers["Location"].endswith("#signup-forms")
    created = session.scalars(select(SignupForm)).one()
    text = session.get(ConsentText, created.text_id)
    assert (created.name, created.topic_ids, created.ask_tracking) == (
        "Shop footer",
        [news.id],
        True,
    )
    assert text is not None and text.text == "Ja, ich möchte den Newsletter.\nAbmeldung jederzeit."
    listed = client.get("/settings/topics").get_data(as_text=True)
    assert f"/s/{created.public_id}" in listed


# -- API -----------------------------------------------------------------------------------


def _auth(session: Session, clock: FrozenClock, role: Role) -> dict[str, str]:
    user = make_user(session, clock, role=role)
    _row, raw = create_token(session, user, "crm", now=clock.now())
    session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_api_lists_topics_for_every_role(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    topic = make_topic(session, clock, "news", name="Newsletter", own_similar_products=True)
    session.commit()
    response = client.get("/api/v1/topics", headers=_auth(session, clock, Role.SALES))
    assert response.status_code == 200
    assert response.json == {
        "items": [
            {
                "id": topic.id,
                "slug": "news",
                "name": "Newsletter",
                "description": "",
                "kind": "marketing",
                "own_similar_products": True,
                "created_at": "2026-01-05T09:00:00Z",
            }
        ]
    }


def test_api_creates_topics_for_admins_only(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    body = {"name": "Newsletter", "slug": "news"}
    marketer = client.post(
        "/api/v1/topics", json=body, headers=_auth(session, clock, Role.MARKETER)
    )
    assert marketer.status_code == 403
    admin = _auth(session, clock, Role.ADMIN)
    created = client.post("/api/v1/topics", json=body, headers=admin)
    assert created.status_code == 201
    assert {k: created.json[k] for k in ("slug", "name", "kind", "own_similar_products")} == {
        "slug": "news",
        "name": "Newsletter",
        "kind": "marketing",
        "own_similar_products": False,
    }
    taken = client.post("/api/v1/topics", json=body, headers=admin)
    assert taken.status_code == 422
    assert taken.json["error"]["details"] == {"slug": "A topic with the slug news exists already."}
    wrong = client.post(
        "/api/v1/topics",
        json={"name": 3, "own_similar_products": "yes", "colour": "red"},
        headers=admin,
    )
    assert wrong.status_code == 422
    assert wrong.json["error"]["details"] == {
        "colour": "is not a property of a topic",
        "name": "must be a string",
        "own_similar_products": "must be a boolean",
        "slug": "is required",
    }
    tracking = client.post(
        "/api/v1/topics",
        json={"name": "Tracking", "slug": "tracking", "kind": "tracking"},
        headers=admin,
    )
    assert tracking.status_code == 201 and tracking.json["kind"] == "tracking"

import re
from datetime import datetime

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts.merge import MergeError, register_merge_hook, unregister_merge_hook
from nurture.contacts.models import Contact, DuplicateDismissal
from nurture.events import Event
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_contact, make_user


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def _planted(session: Session, clock: FrozenClock) -> tuple[Contact, Contact]:
    anna = make_contact(
        session, clock, email="anna@muster.example", first_name="Anna", last_name="Müller",
        company="Muster GmbH", phone="0221 1234567", lifecycle="customer", tags=["kunde"],
    )  # fmt: skip
    again = make_contact(
        session, clock, email="a.mueller@web.example", first_name="Anna", last_name="Mueller",
        company="Muster GmbH", mobile="+49 221 1234567", city="Köln", tags=["newsletter"],
    )  # fmt: skip
    make_contact(session, clock, first_name="Peter", last_name="Schmidt", company="Andere AG")
    session.commit()
    return anna, again


def _pair_url(a: Contact, b: Contact) -> str:
    return f"/contacts/duplicates/{a.id}/{b.id}"


def test_the_list_shows_a_planted_pair_with_reasons_in_words(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    anna, again = _planted(session, clock)

    page = client.get("/contacts/duplicates")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "anna@muster.example" in html and "a.mueller@web.example" in html
    assert "Peter" not in html
    for words in ("similar name", "same phone number", "same company"):
        assert words in html
    assert f'href="{_pair_url(anna, again)}"' in html
    assert "<style" not in html and "style=" not in html


def test_the_list_says_when_nothing_was_found(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    html = client.get("/contacts/duplicates").get_data(as_text=True)
    assert "No possible duplicates found." in html


def test_the_pair_page_shows_both_side_by_side(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    anna, again = _planted(session, clock)

    page = client.get(_pair_url(anna, again))

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'href="/contacts/{anna.id}"' in html and f'href="/contacts/{again.id}"' in html
    # Differing fields are marked and offer a choice; equal ones do not.
    email_row = re.search(r'<tr class="dup-differs" id="row-email">.*?</tr>', html, re.S)
    assert email_row and 'name="field-email" value="low" checked' in email_row.group(0)
    assert 'name="field-city" value="high" checked' in html  # an empty value is filled
    assert 'id="row-company"' in html and 'name="field-company"' not in html
    assert 'class="dup-same" id="row-company"' in html
    assert "customer" in html and "lead" in html
    assert 'name="keep" value="low" checked' in html
    assert "1 event" in html  # contact_created of each
    # A reversed URL is put in order; a contact with itself does not exist.
    assert client.get(_pair_url(again, anna)).headers["Location"] == _pair_url(anna, again)
    assert client.get(_pair_url(anna, anna)).status_code == 404


def test_merge_merges_and_redirects_to_the_kept_contact(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    anna, again = _planted(session, clock)
    anna_id, again_id = anna.id, again.id
    url = _pair_url(anna, again)
    token = csrf_token(client.get(url).get_data(as_text=True))

    # Keep the newer contact, but with the older one's address.
    response = client.post(
        f"{url}/merge",
        data={
            "csrf_token": token,
            "keep": "high",
            "field-email": "low",
            "field-last_name": "low",
            "field-lifecycle": "low",
            "field-city": "high",
        },
    )

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/contacts/{again_id}")
    session.expire_all()
    assert session.get(Contact, anna_id) is None
    kept = session.get(Contact, again_id)
    assert kept is not None
    assert (kept.email, kept.last_name, kept.lifecycle.value, kept.city) == (
        "anna@muster.example",
        "Müller",
        "customer",
        "Köln",
    )
    assert kept.tags == ["kunde", "newsletter"]
    merged = session.scalars(select(Event).where(Event.type == "contact_merged")).one()
    assert merged.contact_id == again_id
    assert merged.payload["merged_by_user_id"] == user.id
    assert merged.payload["merged_contact_id"] == anna_id
    assert session.scalars(select(Event).where(Event.contact_id == anna_id)).all() == []
    assert len(session.scalars(select(Event).where(Event.contact_id == again_id)).all()) == 3
    follow = client.get(response.headers["Location"])
    assert follow.status_code == 200
    assert "Anna Müller was merged into this contact" in follow.get_data(as_text=True)

    # The same form again: the pair is gone, and the page says so instead of failing.
    again_response = client.post(f"{url}/merge", data={"csrf_token": token, "keep": "high"})
    assert again_response.headers["Location"] == "/contacts/duplicates"
    html = client.get("/contacts/duplicates").get_data(as_text=True)
    assert "no longer exists" in html
    gone = client.get(url)
    assert gone.status_code == 302 and gone.headers["Location"] == "/contacts/duplicates"


def test_dismiss_removes_the_pair_from_the_list(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    user = _as(client, session, clock, Role.ADMIN)
    anna, again = _planted(session, clock)
    token = csrf_token(client.get(_pair_url(anna, again)).get_data(as_text=True))

    response = client.post(f"{_pair_url(anna, again)}/dismiss", data={"csrf_token": token})

    assert response.status_code == 302
    assert response.headers["Location"] == "/contacts/duplicates"
    row = session.scalars(select(DuplicateDismissal)).one()
    assert (row.low_id, row.high_id, row.dismissed_by_id) == (anna.id, again.id, user.id)
    html = client.get("/contacts/duplicates").get_data(as_text=True)
    assert "different people" in html
    assert "a.mueller@web.example" not in html.split("</caption>")[-1]
    assert "No possible duplicates found." in html
    assert "was marked as two different people" in client.get(_pair_url(anna, again)).get_data(
        as_text=True
    )


def test_sales_may_not_see_or_merge(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.SALES)
    anna, again = _planted(session, clock)

    assert client.get("/contacts/duplicates").status_code == 403
    assert client.get(_pair_url(anna, again)).status_code == 403
    # A valid token (from the logout form of any page): the role is what refuses.
    token = {"csrf_token": csrf_token(client.get("/").get_data(as_text=True))}
    assert client.post(f"{_pair_url(anna, again)}/merge", data=token).status_code == 403
    assert client.post(f"{_pair_url(anna, again)}/dismiss", data=token).status_code == 403
    assert session.get(Contact, again.id) is not None


def test_logged_out_users_are_sent_to_the_login(client: FlaskClient) -> None:
    response = client.get("/contacts/duplicates")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_posts_without_csrf_token_are_refused(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    anna, again = _planted(session, clock)

    assert client.post(f"{_pair_url(anna, again)}/merge", data={"keep": "low"}).status_code == 400
    assert client.post(f"{_pair_url(anna, again)}/dismiss", data={}).status_code == 400
    session.expire_all()
    assert session.get(Contact, again.id) is not None
    assert session.scalars(select(DuplicateDismissal)).all() == []


def test_a_refused_merge_returns_to_the_comparison_with_the_reason(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    def refuse(_session: Session, _keep: Contact, _merge: Contact, _now: datetime) -> None:
        raise MergeError("Consent records disagree.")

    _as(client, session, clock, Role.MARKETER)
    anna, again = _planted(session, clock)
    url = _pair_url(anna, again)
    token = csrf_token(client.get(url).get_data(as_text=True))
    register_merge_hook(refuse)
    try:
        response = client.post(f"{url}/merge", data={"csrf_token": token, "keep": "low"})
    finally:
        unregister_merge_hook(refuse)

    assert response.status_code == 302 and response.headers["Location"] == url
    assert "Consent records disagree." in client.get(url).get_data(as_text=True)
    session.expire_all()
    assert session.get(Contact, anna.id) is not None and session.get(Contact, again.id) is not None
    assert session.scalars(select(Event).where(Event.type == "contact_merged")).all() == []

"""The hosted signup page (and embedded forms posting to it) and the confirmation page."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.consent.models import (
    Action,
    ConsentEntry,
    ConsentRequest,
    ConsentText,
    SignupAttempt,
    SignupForm,
    SuppressionReason,
    TopicKind,
)
from nurture.consent.signup_forms import create_form
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.mail.identity import confirmation_token
from nurture.mail.models import Message
from tests.conftest import SECRET, csrf_token, login
from tests.factories import PASSWORD, make_topic, make_user

TEXT = "Yes, please send me the newsletter.\nI can unsubscribe at any time."
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
STAMP_RE = re.compile(r'name="ts" value="([^"]+)"')


@pytest.fixture
def form(session: Session, clock: FrozenClock) -> SignupForm:
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING, name="Tracking")
    signup = create_form(
        session,
        name="Footer EN",
        topics=[
            make_topic(session, clock, "news", name="Newsletter"),
            make_topic(session, clock, "offers", name="Special offers"),
        ],
        text=TEXT,
        language="en",
        ask_tracking=True,
        now=clock.now(),
    )
    session.commit()
    return signup


def _count(session: Session, model: type) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(model)) or 0


def _fields(**overrides: object) -> dict[str, object]:
    return {
        "email": "anna@kunde.example",
        "first_name": "Anna",
        "last_name": "Müller",
        "gender": "female",
        "topics": ["news"],
        "website": "",
    } | overrides


def _signup(
    client: FlaskClient,
    clock: FrozenClock,
    form: SignupForm,
    *,
    wait: float = 3,
    **overrides: object,
):  # type: ignore[no-untyped-def]
    """Open the page, take ``wait`` seconds to fill it in, submit."""
    page = client.get(f"/s/{form.public_id}").get_data(as_text=True)
    stamp = STAMP_RE.search(page)
    assert stamp is not None
    clock.advance(seconds=wait)
    data = {"ts": stamp.group(1)} | _fields(**overrides)
    return client.post(f"/s/{form.public_id}", data=data, headers={"User-Agent": BROWSER})


def _token(session: Session) -> str:
    session.expire_all()
    message = session.scalars(select(Message).order_by(Message.id.desc())).first()
    assert message is not None
    return confirmation_token(SECRET, message.token)


def _ledger(session: Session) -> list[tuple[Action, str | None, str | None]]:
    session.expire_all()
    rows = session.scalars(select(ConsentEntry).order_by(ConsentEntry.id))
    return [(e.action, e.ip, e.user_agent) for e in rows]


# -- the hosted page -------------------------------------------------------------------------


def test_the_page_shows_fields_topics_and_the_consent_text_verbatim(
    client: FlaskClient, form: SignupForm
) -> None:
    response = client.get(f"/s/{form.public_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<html lang="en">' in html
    assert "Yes, please send me the newsletter.<br>I can unsubscribe at any time." in html
    for name in ("email", "first_name", "last_name", "gender", "tracking", "ts"):
        assert f'name="{name}"' in html
    assert 'value="news"' in html and "Newsletter" in html and "Special offers" in html
    assert " checked" not in html  # consent is never pre-ticked
    assert '<div class="signup-hp" aria-hidden="true">' in html and 'name="website"' in html
    assert 'name="csrf_token"' not in html and "style=" not in html
    assert "Set-Cookie" not in response.headers  # nothing to track a visitor by


def test_a_german_form_speaks_german_whatever_the_browser_says(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    german = create_form(
        session,
        name="Shop DE",
        topics=[make_topic(session, clock, "news")],
        text="Ja, ich möchte den Newsletter erhalten.",
        language="de",
        ask_tracking=False,
        now=clock.now(),
    )
    session.commit()
    html = client.get(f"/s/{german.public_id}", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert '<html lang="de">' in html and "E-Mail-Adresse" in html
    assert 'name="tracking"' not in html


def test_a_signup_shows_check_your_inbox_and_records_the_request(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    response = _signup(client, clock, form, topics=["news", "offers"], tracking="1")
    assert response.status_code == 200
    assert 'id="signup-sent"' in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    contact = session.scalars(select(Contact)).one()
    assert (contact.email, contact.first_name, contact.gender) == (
        "anna@kunde.example",
        "Anna",
        "female",
    )
    request = session.scalars(select(ConsentRequest)).one()
    assert (request.source, request.ip, request.user_agent) == (
        f"form:{form.public_id}",
        "127.0.0.1",
        BROWSER,
    )
    assert _ledger(session) == [(Action.REQUESTED, "127.0.0.1", BROWSER)] * 3
    # With tracking ticked, its wording is part of the recorded text.
    text = session.get(ConsentText, request.text_id)
    assert text is not None and text.text.startswith(TEXT + "\n\n")
    assert "open these emails" in text.text
    assert _count(session, Message) == 1


def test_an_embedded_form_without_a_stamp_is_accepted(
    client: FlaskClient, session: Session, form: SignupForm
) -> None:
    # The pasted snippet is static HTML: no stamp, no cookie, no CSRF token.
    response = client.post(f"/s/{form.public_id}", data=_fields())
    assert response.status_code == 200
    assert _count(session, ConsentRequest) == 1
    request = session.scalars(select(ConsentRequest)).one()
    text = session.get(ConsentText, request.text_id)
    assert text is not None and text.text == TEXT


@pytest.mark.parametrize(
    "case",
    ["honeypot", "too_fast", "forged_stamp", "stamp_of_other_form"],
)
def test_bot_posts_look_like_success_and_record_nothing(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm, case: str
) -> None:
    if case == "honeypot":
        response = _signup(client, clock, form, website="https://spam.example")
    elif case == "too_fast":
        response = _signup(client, clock, form, wait=1)
    elif case == "forged_stamp":
        response = client.post(f"/s/{form.public_id}", data=_fields(ts="WzEsMl0.forged"))
    else:
        other = create_form(
            session,
            name="Other",
            topics=[make_topic(session, clock, "news")],
            text=TEXT,
            language="de",
            ask_tracking=False,
            now=clock.now(),
        )
        session.commit()
        page = client.get(f"/s/{other.public_id}").get_data(as_text=True)
        stamp = STAMP_RE.search(page)
        assert stamp is not None
        clock.advance(seconds=10)
        response = client.post(f"/s/{form.public_id}", data=_fields(ts=stamp.group(1)))
    assert response.status_code == 200
    assert 'id="signup-sent"' in response.get_data(as_text=True)
    for model in (Contact, ConsentRequest, ConsentEntry, Message):
        assert _count(session, model) == 0, model


def test_a_post_without_the_forms_public_id_finds_no_form(
    client: FlaskClient, session: Session, form: SignupForm
) -> None:
    for public_id in ("unknown", form.public_id[:-1], form.public_id + "x"):
        response = client.post(f"/s/{public_id}", data=_fields())
        assert response.status_code == 404
        assert "This sign-up form does not exist" in response.get_data(as_text=True)
    form.active = False
    session.commit()
    assert client.get(f"/s/{form.public_id}").status_code == 404
    assert client.post(f"/s/{form.public_id}", data=_fields()).status_code == 404
    assert _count(session, Contact) == 0 and _count(session, SignupAttempt) == 0


def test_a_bot_burst_is_answered_with_429_and_retry_after(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    state = app.extensions["nurture"]
    state.settings = state.settings.with_overrides(signup_rate_per_ip_hour=5)
    answers = []
    for i in range(8):
        answers.append(client.post(f"/s/{form.public_id}", data=_fields(email=f"bot{i}@x.example")))
        clock.advance(seconds=1)
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    limited = answers[-1]
    assert int(limited.headers["Retry-After"]) == 3600 - 7
    html = limited.get_data(as_text=True)
    assert 'id="signup-problem"' in html and "60" in html
    assert _count(session, ConsentRequest) == 5
    ip_hits = select(func.count()).where(SignupAttempt.key.startswith("ip:"))
    assert session.scalar(ip_hits) == 5  # refused attempts are not counted
    # Another network is not affected; and after the hour this one may sign up again.
    other = client.post(
        f"/s/{form.public_id}",
        data=_fields(email="human@x.example"),
        environ_base={"REMOTE_ADDR": "198.51.100.20"},
    )
    assert other.status_code == 200
    clock.advance(seconds=3600)
    assert client.post(f"/s/{form.public_id}", data=_fields()).status_code == 200


def test_invalid_input_shows_the_form_again_with_messages(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    response = _signup(client, clock, form, email="anna@", topics=[], first_name="A" * 101)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="signup-errors"' in html
    assert "Choose at least one topic." in html
    assert 'value="anna@"' in html  # what was typed stays
    response = _signup(client, clock, form, email="anna@@kunde")
    assert response.status_code == 422
    assert "Enter a valid email address." in response.get_data(as_text=True)
    # A topic the form does not offer counts as none.
    response = _signup(client, clock, form, topics=["tracking"])
    assert response.status_code == 422
    assert _count(session, Contact) == 0


def test_a_suppressed_address_gets_a_clear_message(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    settings = app.extensions["nurture"].settings
    suppress(
        session,
        secret=settings.suppression_secret,
        email="anna@kunde.example",
        reason=SuppressionReason.UNSUBSCRIBED,
        now=clock.now(),
    )
    session.commit()
    response = _signup(client, clock, form)
    assert response.status_code == 422
    assert "This address has asked not to be mailed" in response.get_data(as_text=True)
    assert _count(session, Contact) == 0


# -- the embed page ---------------------------------------------------------------------------


def test_staff_see_the_snippet_to_embed(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    url = f"/s/{form.public_id}/embed"
    assert client.get(url).status_code == 302  # to the login
    sales = make_user(session, clock, role=Role.SALES)
    login(client, sales.email, PASSWORD)
    assert client.get(url).status_code == 403
    marketer = make_user(session, clock, role=Role.MARKETER)
    staff = app.test_client()
    login(staff, marketer.email, PASSWORD)
    html = staff.get(url).get_data(as_text=True)
    assert (
        f"&lt;form class=&#34;nurture-signup&#34; method=&#34;post&#34; "
        f"action=&#34;https://nurture.test/s/{form.public_id}&#34;" in html
    )
    assert f"https://nurture.test/s/{form.public_id}</a>" in html


# -- confirmation -----------------------------------------------------------------------------


def test_opening_the_link_shows_a_button_and_confirms_nothing(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    _signup(client, clock, form, topics=["news", "offers"])
    token = _token(session)
    before = _ledger(session)
    for _ in range(3):  # a mail scanner, then the person, then a preview
        response = client.get(f"/confirm/{token}")
        assert response.status_code == 200
        assert client.head(f"/confirm/{token}").status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="confirm-form"' in html and "Newsletter" in html and "Special offers" in html
    assert "Yes, please send me the newsletter." in html
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert _ledger(session) == before
    assert session.scalars(select(ConsentRequest)).one().confirmed_at is None


def test_the_button_confirms_with_csrf_and_only_once(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    _signup(client, clock, form)
    token = _token(session)
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    # Not exempt from CSRF like the sign-up: the POST comes from our own page.
    assert client.post(f"/confirm/{token}").status_code == 400
    assert [a for a, _ip, _ua in _ledger(session)] == [Action.REQUESTED]

    agent = {"User-Agent": "Mozilla/5.0 (iPhone) Safari/18"}
    response = client.post(
        f"/confirm/{token}", data={"csrf_token": csrf_token(page)}, headers=agent
    )
    assert response.status_code == 200
    assert 'id="confirmed"' in response.get_data(as_text=True)
    assert _ledger(session) == [
        (Action.REQUESTED, "127.0.0.1", BROWSER),
        (Action.CONFIRMED, "127.0.0.1", agent["User-Agent"]),
    ]
    # Reused: succeeds again, records nothing, and the page says it is done.
    again = client.post(f"/confirm/{token}", data={"csrf_token": csrf_token(page)})
    assert again.status_code == 200
    assert len(_ledger(session)) == 2
    assert 'id="confirm-done"' in client.get(f"/confirm/{token}").get_data(as_text=True)


def test_a_bad_link_and_an_expired_link_get_clear_4xx_pages(
    client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:
    _signup(client, clock, form)
    token = _token(session)
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    for bad in (token[:-2], "x" * 43):
        response = client.get(f"/confirm/{bad}", headers={"Accept-Language": "en"})
        assert response.status_code == 404
        assert "This confirmation link is not valid" in response.get_data(as_text=True)
        posted = client.post(f"/confirm/{bad}", data={"csrf_token": csrf_token(page)})
        assert posted.status_code == 404
    clock.advance(days=7, seconds=1)
    expired = client.get(f"/confirm/{token}", headers={"Accept-Language": "en"})
    assert expired.status_code == 410
    assert "Please sign up again." in expired.get_data(as_text=True)
    posted = client.post(f"/confirm/{token}", data={"csrf_token": csrf_token(page)})
    assert posted.status_code == 410
    assert [a for a, _ip, _ua in _ledger(session)] == [Action.REQUESTED]


def _signup_via_proxy(client: FlaskClient, clock: FrozenClock, form: SignupForm, email: str):  # type: ignore[no-untyped-def]
    page = client.get(f"/s/{form.public_id}").get_data(as_text=True)
    stamp = STAMP_RE.search(page)
    assert stamp is not None
    clock.advance(seconds=3)
    return client.post(
        f"/s/{form.public_id}",
        data={"ts": stamp.group(1)} | _fields(email=email),
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
        headers={"X-Forwarded-For": "203.0.113.7", "User-Agent": BROWSER},
    )


def test_behind_a_trusted_proxy_the_visitors_ip_is_the_evidence(
    app, client: FlaskClient, session: Session, clock: FrozenClock, form: SignupForm
) -> None:  # type: ignore[no-untyped-def]
    from nurture import create_app
    from nurture.consent.models import ConsentEntry

    def ip_of(email: str) -> set[str | None]:
        contact = session.scalar(select(Contact).where(Contact.email == email))
        assert contact is not None
        entries = select(ConsentEntry.ip).where(ConsentEntry.contact_id == contact.id)
        return set(session.scalars(entries))

    # Trusting no proxy (the default), a forged header changes nothing.
    assert _signup_via_proxy(client, clock, form, "direct@kunde.example").status_code == 200
    assert ip_of("direct@kunde.example") == {"10.0.0.2"}
    state = app.extensions["nurture"]
    proxied = create_app(state.settings.with_overrides(trusted_proxies=1), clock=clock)
    try:
        answer = _signup_via_proxy(proxied.test_client(), clock, form, "behind@kunde.example")
        assert answer.status_code == 200
        assert ip_of("behind@kunde.example") == {"203.0.113.7"}
    finally:
        proxied.extensions["nurture"].close()

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.login import purge_login_attempts
from nurture.auth.models import LoginAttempt, Role, User
from nurture.auth.users import set_password
from nurture.clock import FrozenClock
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_user


def test_login_with_the_right_password_reaches_the_dashboard(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    user = make_user(session, clock, role=Role.MARKETER)
    response = login(client, user.email, PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "Dashboard" in page.get_data(as_text=True)
    session.expire_all()
    assert session.get(User, user.id).last_login_at == clock.now()  # type: ignore[union-attr]


def test_wrong_password_is_refused_with_a_message(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    user = make_user(session, clock)
    response = login(client, user.email, "not the password")
    assert response.status_code == 401
    assert "Email or password is wrong." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still logged out
    attempt = session.scalars(select(LoginAttempt)).one()
    assert (attempt.email, attempt.succeeded) == (user.email, False)


def test_unknown_email_gets_the_same_answer_as_a_wrong_password(client: FlaskClient) -> None:
    response = login(client, "nobody@nurture.example", "whatever it is")
    assert response.status_code == 401
    assert "Email or password is wrong." in response.get_data(as_text=True)


def test_repeated_failures_lock_the_login_until_the_lock_expires(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    user = make_user(session, clock)
    for _ in range(5):
        assert login(client, user.email, "guess").status_code == 401
    # Even the right password is refused while locked.
    locked = login(client, user.email, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed logins. Try again in 15 minutes." in locked.get_data(as_text=True)
    clock.advance(minutes=15, seconds=1)
    assert login(client, user.email, PASSWORD).status_code == 302


def test_deactivated_user_cannot_log_in(client: FlaskClient, session: Session, clock) -> None:
    user = make_user(session, clock)
    user.active = False
    session.commit()
    assert login(client, user.email, PASSWORD).status_code == 401


def test_login_without_csrf_token_is_refused(client: FlaskClient, session, clock) -> None:
    user = make_user(session, clock)
    response = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "The CSRF token is missing." in response.get_data(as_text=True)
    assert session.scalars(select(LoginAttempt)).all() == []


def test_next_parameter_cannot_redirect_off_site(client: FlaskClient, session, clock) -> None:
    user = make_user(session, clock)
    page = client.get("/login?next=//evil.example/phish")
    token = csrf_token(page.get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "email": user.email,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/phish",
        },
    )
    assert response.headers["Location"] == "/"


def test_next_parameter_returns_to_the_page_asked_for(client: FlaskClient, session, clock) -> None:
    user = make_user(session, clock)
    first = client.get("/settings/tokens")
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/login?next=")
    page = client.get(first.headers["Location"])
    token = csrf_token(page.get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "email": user.email,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/settings/tokens",
        },
    )
    assert response.headers["Location"] == "/settings/tokens"


def test_idle_session_expires(client: FlaskClient, session: Session, clock: FrozenClock) -> None:
    user = make_user(session, clock)
    login(client, user.email, PASSWORD)
    clock.advance(minutes=119)
    assert client.get("/").status_code == 200  # activity keeps the session alive
    clock.advance(minutes=121)
    expired = client.get("/", follow_redirects=True)
    assert "Your session has expired. Please log in again." in expired.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_password_change_ends_other_sessions(client: FlaskClient, app, session, clock) -> None:  # type: ignore[no-untyped-def]
    user = make_user(session, clock)
    login(client, user.email, PASSWORD)
    assert client.get("/").status_code == 200
    set_password(session, user, "an entirely new passphrase")
    session.commit()
    assert client.get("/").status_code == 302


def test_logout_needs_a_post_with_csrf(client: FlaskClient, session, clock) -> None:
    user = make_user(session, clock)
    login(client, user.email, PASSWORD)
    assert client.get("/logout").status_code == 405
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_old_login_attempts_are_purged(session: Session, clock: FrozenClock) -> None:
    from datetime import timedelta

    session.add(
        LoginAttempt(
            email="a@b.c", ip="ip", succeeded=False, at=clock.now() - timedelta(days=30, seconds=1)
        )
    )
    session.add(LoginAttempt(email="a@b.c", ip="ip", succeeded=True, at=clock.now()))
    session.commit()
    assert purge_login_attempts(session, now=clock.now()) == 1


def test_session_cookie_is_http_only_and_same_site(client: FlaskClient, session, clock) -> None:
    user = make_user(session, clock)
    response = login(client, user.email, PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_german_browser_gets_the_german_login_page(client: FlaskClient) -> None:
    page = client.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    text = page.get_data(as_text=True)
    assert '<html lang="de"' in text
    assert "Anmelden" in text

import re

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import ApiToken, Role, User
from nurture.auth.passwords import verify_password
from nurture.clock import FrozenClock
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_user


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def test_sales_user_is_refused_the_user_admin_page(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.SALES)
    response = client.get("/settings/users")
    assert response.status_code == 403
    assert "You do not have access to this page" in response.get_data(as_text=True)


def test_admin_creates_a_user_with_a_generated_password(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    token = csrf_token(client.get("/settings/users").get_data(as_text=True))
    response = client.post(
        "/settings/users",
        data={
            "email": "Sales.Lead@Nurture.Example",
            "name": "Sam",
            "role": "sales",
            "password": "",
            "csrf_token": token,
        },
        follow_redirects=True,
    )
    text = response.get_data(as_text=True)
    assert "User sales.lead@nurture.example created." in text
    assert response.headers["Cache-Control"] == "no-store"
    shown = re.search(r'id="shown-password"[^>]*>([^<]+)</code>', text)
    assert shown, "the generated password is shown once"
    created = session.scalars(select(User).where(User.email == "sales.lead@nurture.example")).one()
    assert created.role == Role.SALES
    # The shown password is the one that works, and it never went into the session cookie.
    assert verify_password(created.password_hash, shown.group(1))
    assert shown.group(1) not in response.headers.get("Set-Cookie", "")
    assert 'id="shown-password"' not in client.get("/settings/users").get_data(as_text=True)


def test_admin_resets_a_password_of_a_short_named_user(client: FlaskClient, session, clock) -> None:
    # Generated passwords must satisfy the policy even for a one-letter mailbox name.
    _as(client, session, clock, Role.ADMIN)
    other = make_user(session, clock, role=Role.SALES, email="a@nurture.example")
    token = csrf_token(client.get("/settings/users").get_data(as_text=True))
    for _ in range(5):
        response = client.post(f"/settings/users/{other.id}/password", data={"csrf_token": token})
        assert response.status_code == 200
        shown = re.search(
            r'id="shown-password"[^>]*>([^<]+)</code>', response.get_data(as_text=True)
        )
        assert shown
        session.expire_all()
        assert verify_password(session.get(User, other.id).password_hash, shown.group(1))  # type: ignore[union-attr]


def test_password_change_needs_the_current_password(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    token = csrf_token(client.get("/settings/account").get_data(as_text=True))
    wrong = client.post(
        "/settings/account",
        data={
            "current_password": "not mine",
            "password": "a brand new passphrase",
            "confirm": "a brand new passphrase",
            "csrf_token": token,
        },
    )
    assert wrong.status_code == 422
    assert "The current password is wrong." in wrong.get_data(as_text=True)
    differ = client.post(
        "/settings/account",
        data={
            "current_password": PASSWORD,
            "password": "a brand new passphrase",
            "confirm": "another passphrase",
            "csrf_token": token,
        },
    )
    assert differ.status_code == 422
    assert "The passwords differ." in differ.get_data(as_text=True)
    ok = client.post(
        "/settings/account",
        data={
            "current_password": PASSWORD,
            "password": "a brand new passphrase",
            "confirm": "a brand new passphrase",
            "csrf_token": token,
        },
        follow_redirects=True,
    )
    assert "Your password was changed" in ok.get_data(as_text=True)
    session.expire_all()
    assert verify_password(session.get(User, user.id).password_hash, "a brand new passphrase")  # type: ignore[union-attr]
    # This browser stays logged in under the new session version.
    assert client.get("/").status_code == 200


def test_service_errors_are_shown_in_german(client: FlaskClient, session, clock) -> None:
    admin = _as(client, session, clock, Role.ADMIN)
    de = {"Accept-Language": "de"}
    token = csrf_token(client.get("/settings/users", headers=de).get_data(as_text=True))
    response = client.post(
        f"/settings/users/{admin.id}/role",
        data={"role": "sales", "csrf_token": token},
        headers=de,
        follow_redirects=True,
    )
    text = response.get_data(as_text=True)
    assert "The last active admin" not in text
    assert "Admin" in text and "letzte" in text


def test_duplicate_and_weak_users_are_refused(client: FlaskClient, session, clock) -> None:
    admin = _as(client, session, clock, Role.ADMIN)
    token = csrf_token(client.get("/settings/users").get_data(as_text=True))
    duplicate = client.post(
        "/settings/users",
        data={"email": admin.email.upper(), "role": "sales", "csrf_token": token},
    )
    assert duplicate.status_code == 422
    assert f"A user with the email {admin.email} already exists." in duplicate.get_data(
        as_text=True
    )
    weak = client.post(
        "/settings/users",
        data={
            "email": "new@nurture.example",
            "role": "sales",
            "password": "short",
            "csrf_token": token,
        },
    )
    assert weak.status_code == 422
    assert "The password must be at least 12 characters long." in weak.get_data(as_text=True)
    assert session.scalars(select(User).where(User.email == "new@nurture.example")).first() is None


def test_admin_deactivates_a_user_and_their_session_ends(app, session, clock) -> None:  # type: ignore[no-untyped-def]
    admin_client, sales_client = app.test_client(), app.test_client()
    _as(admin_client, session, clock, Role.ADMIN)
    sales = _as(sales_client, session, clock, Role.SALES)
    assert sales_client.get("/").status_code == 200
    token = csrf_token(admin_client.get("/settings/users").get_data(as_text=True))
    response = admin_client.post(
        f"/settings/users/{sales.id}/deactivate",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert f"{sales.email} deactivated." in response.get_data(as_text=True)
    assert sales_client.get("/").status_code == 302


def test_last_admin_cannot_be_demoted(client: FlaskClient, session, clock) -> None:
    admin = _as(client, session, clock, Role.ADMIN)
    token = csrf_token(client.get("/settings/users").get_data(as_text=True))
    response = client.post(
        f"/settings/users/{admin.id}/role",
        data={"role": "sales", "csrf_token": token},
        follow_redirects=True,
    )
    assert "The last active admin cannot lose the admin role." in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(User, admin.id).role == Role.ADMIN  # type: ignore[union-attr]


def test_admin_changes_a_role(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.ADMIN)
    other = make_user(session, clock, role=Role.SALES)
    token = csrf_token(client.get("/settings/users").get_data(as_text=True))
    client.post(f"/settings/users/{other.id}/role", data={"role": "marketer", "csrf_token": token})
    session.expire_all()
    assert session.get(User, other.id).role == Role.MARKETER  # type: ignore[union-attr]


def test_user_creates_and_revokes_an_api_token_in_the_ui(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    token = csrf_token(client.get("/settings/tokens").get_data(as_text=True))
    created = client.post("/settings/tokens", data={"name": "shop", "csrf_token": token})
    text = created.get_data(as_text=True)
    assert created.status_code == 200
    row = session.scalars(select(ApiToken)).one()
    assert re.search(rf'id="new-token"[^>]*>{row.prefix}[\w-]+</code>', text)
    # The secret is shown once: the next visit shows only the prefix.
    assert 'id="new-token"' not in client.get("/settings/tokens").get_data(as_text=True)
    client.post(f"/settings/tokens/{row.id}/revoke", data={"csrf_token": token})
    session.expire_all()
    assert session.get(ApiToken, row.id).revoked_at == clock.now()  # type: ignore[union-attr]


def test_friendly_404_page(client: FlaskClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "<html" in response.get_data(as_text=True)

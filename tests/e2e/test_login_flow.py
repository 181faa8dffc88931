import pytest
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.ops.heartbeat import register_worker
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser


def _log_in(page, base: str, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_marketer_logs_in_and_sees_the_dashboard(
    page, live_server: str, session: Session, clock: FrozenClock
) -> None:  # type: ignore[no-untyped-def]
    user = make_user(session, clock, role=Role.MARKETER)
    _log_in(page, live_server, user.email)
    page.wait_for_url(f"{live_server}/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    # No worker has beaten yet: the dashboard says so plainly.
    assert page.locator("#worker-warning").is_visible()
    assert user.email in page.content()

    register_worker(session, mode="worker", now=clock.now())
    session.commit()
    page.reload()
    assert page.locator("#worker-status").inner_text().startswith("1 worker")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{live_server}/login")
    assert page.get_by_role("heading", name="Log in to nurture").is_visible()


def test_sales_user_is_refused_the_admin_page(
    page, live_server: str, session: Session, clock: FrozenClock
) -> None:  # type: ignore[no-untyped-def]
    user = make_user(session, clock, role=Role.SALES)
    _log_in(page, live_server, user.email)
    page.wait_for_url(f"{live_server}/")
    # The navigation does not even offer the admin page to sales.
    assert page.get_by_role("link", name="Users").count() == 0
    response = page.goto(f"{live_server}/settings/users")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="You do not have access to this page").is_visible()


def test_wrong_password_shows_an_error_in_the_browser(
    page, live_server: str, session: Session, clock: FrozenClock
) -> None:  # type: ignore[no-untyped-def]
    user = make_user(session, clock)
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("definitely wrong")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").filter(has_text="Email or password is wrong.").is_visible()

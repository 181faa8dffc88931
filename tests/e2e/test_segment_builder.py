"""The segment builder's live count and sample in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from nurture.auth.models import Role
from tests.contacts.test_segments_ui import _contacts
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser


def test_the_builder_counts_live_in_the_browser(page, live_server: str, session, clock) -> None:  # type: ignore[no-untyped-def]
    user = make_user(session, clock, role=Role.MARKETER)
    _contacts(session, clock)
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server}/")
    page.goto(f"{live_server}/contacts/segments/new")

    page.select_option("#c0_subject", "city")
    # Only the text operators are offered for a text field; the count/days inputs are hidden.
    assert page.eval_on_selector("#c0_op optgroup[data-type=event]", "g => g.disabled")
    assert not page.eval_on_selector("#c0_op optgroup[data-type=text]", "g => g.disabled")
    assert page.locator("#c0_days").is_hidden()
    page.select_option("#c0_op", "eq")
    page.fill("#c0_value", "Berlin")
    expect(page.locator("#segment-summary")).to_contain_text("3 contacts match now.")
    assert page.locator("#segment-sample tbody tr").count() == 3

    page.select_option("#c1_subject", "event:order")
    assert page.locator("#c1_value").is_hidden() and page.locator("#c1_days").is_visible()
    page.select_option("#c1_op", "none_within_days")
    page.fill("#c1_days", "0")
    expect(page.locator("#segment-row-1-errors")).to_contain_text("Days: must be")
    page.fill("#c1_days", "180")
    expect(page.locator("#segment-summary")).to_contain_text("2 contacts match now.")
    assert page.locator("#segment-row-1-errors").is_hidden()
    page.fill("#segment-name", "Live")
    page.get_by_role("button", name="Create segment").click()
    page.wait_for_url(re.compile(r".*/contacts/segments/\d+$"))
    assert "Segment Live created." in page.content()

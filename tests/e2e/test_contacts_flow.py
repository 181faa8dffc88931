"""A marketer's day with contacts in a real browser: import through the wizard, read the error
report, open a contact's timeline, merge the duplicate the import brought in."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.contacts.models import Contact
from nurture.events import Event
from nurture.worker import Worker
from tests.factories import PASSWORD, make_contact, make_user

pytestmark = pytest.mark.browser

# German Excel: ';', Windows-1252. Line 3 has a broken address, line 5 an impossible date.
CSV = (
    "E-Mail;Anrede;Titel;Vorname;Nachname;Firma;Telefon;Geburtstag\r\n"
    "anna.mueller@neu.example;Frau;Dr.;Anna;Müller;Bäckerei Müller GmbH;+49 221 123456;\r\n"
    "kaputt@@example;Herr;;Bernd;Schulz;;;\r\n"
    "jörg.weiss@kunde.example;Herr;;Jörg;Weiß;Weiß & Co;;01.04.1975\r\n"
    "clara@kunde.example;Frau;;Clara;Wolf;;;31.02.1980\r\n"
).encode("cp1252")


def _log_in(page, base: str, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")


def test_import_timeline_and_merge_in_the_browser(
    page, live_server: str, app, session: Session, clock: FrozenClock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    marketer = make_user(session, clock, role=Role.MARKETER)
    # The same person, already known under her old address: the import brings a duplicate.
    old = make_contact(
        session,
        clock,
        email="a.mueller@alt.example",
        first_name="Anna",
        last_name="Müller",
        gender="female",
        company="Bäckerei Müller GmbH",
        phone="+49 221 123456",
        city="Köln",
    )
    session.commit()
    file = tmp_path / "kunden.csv"
    file.write_bytes(CSV)

    _log_in(page, live_server, marketer.email)

    # -- the import wizard: upload, map, run, report -------------------------------------------
    page.get_by_role("link", name="Imports").click()
    page.get_by_label("CSV file").set_input_files(str(file))
    page.get_by_role("button", name="Upload and map columns").click()
    page.wait_for_url(re.compile(r"/contacts/imports/\d+/map$"))
    # The German headers are recognised; the marketer only checks and starts.
    assert page.get_by_label("Import column E-Mail as").input_value() == "email"
    assert page.get_by_label("Import column Nachname as").input_value() == "last_name"
    page.get_by_role("button", name="Start import").click()
    page.wait_for_url(re.compile(r"/contacts/imports/\d+$"))
    assert page.locator("#import-bar").is_visible()

    # The worker's job does the import; the open page follows its progress by itself.
    Worker(app.extensions["nurture"], mode="embedded").run_job_now("imports")
    page.locator("#import-report").wait_for()
    summary = page.locator("#import-summary").inner_text()
    assert "2" in summary
    errors = page.locator("#import-errors-table tbody tr")
    assert errors.count() == 2
    assert errors.nth(0).inner_text().startswith("3")
    assert "email" in errors.nth(0).inner_text()
    assert errors.nth(1).inner_text().startswith("5")
    assert "31.02.1980" in errors.nth(1).inner_text()
    with page.expect_download() as download:
        page.locator("#import-errors-download").click()
    report = download.value.path().read_bytes().decode("utf-8-sig")
    assert report.splitlines()[0].startswith("line;field;message")
    assert len(report.splitlines()) == 3

    # -- the contact's page and its timeline --------------------------------------------------
    page.get_by_role("link", name="Contacts", exact=True).click()
    page.get_by_label("Email, last name or company starts with").fill("weiß")
    page.keyboard.press("Enter")
    page.get_by_role("link", name=re.compile("Weiß")).first.click()
    page.wait_for_url(re.compile(r"/contacts/\d+$"))
    assert page.locator("#people-salutation").inner_text() == "Sehr geehrter Herr Weiß,"
    timeline = page.locator("#people-timeline")
    assert timeline.locator("li").count() == 1
    page.get_by_label("What", exact=True).select_option("call")
    page.get_by_label("Notes").fill("Hat nach dem Frühjahrskatalog gefragt.")
    page.get_by_role("button", name="Log it").click()
    assert timeline.get_by_text("Hat nach dem Frühjahrskatalog gefragt.").is_visible()
    assert timeline.locator("li").count() == 2

    # -- duplicates: compare side by side and merge -------------------------------------------
    page.get_by_role("link", name="Duplicates").first.click()
    page.get_by_role("link", name=re.compile("^Compare")).first.click()
    page.wait_for_url(re.compile(r"/contacts/duplicates/\d+/\d+$"))
    assert page.get_by_text("a.mueller@alt.example").first.is_visible()
    assert page.get_by_text("anna.mueller@neu.example").first.is_visible()
    page.get_by_role("button", name="Merge").click()
    page.wait_for_url(re.compile(r"/contacts/\d+$"))
    assert page.locator("#people-timeline").get_by_text(re.compile("Merged with")).is_visible()

    session.expire_all()
    annas = session.scalars(select(Contact).where(Contact.last_name == "Müller")).all()
    assert len(annas) == 1
    # Both histories live on: both contact_created events and the merge sit on the survivor.
    kinds = session.scalars(
        select(Event.type).where(Event.contact_id == annas[0].id).order_by(Event.id)
    ).all()
    assert kinds.count("contact_created") == 2
    assert "contact_merged" in kinds
    total = session.scalar(select(func.count()).select_from(Contact))
    assert total == 2  # Anna (one, merged) and Jörg; nobody from the two bad rows
    # The older record is kept by default, and the merge took nothing the marketer did not pick.
    assert annas[0].id == old.id
    assert annas[0].email == "a.mueller@alt.example"
    assert annas[0].title == "Dr."  # empty on the kept record, so the import's value survives

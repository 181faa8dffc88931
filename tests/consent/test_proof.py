"""The printable consent proof and the consent card on the contact page."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin
from nurture.consent.models import ConsentText, SuppressionReason
from nurture.consent.optin import confirm, request_optin
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.mail.identity import confirmation_token
from nurture.mail.models import Message
from tests.conftest import SECRET, login
from tests.factories import PASSWORD, make_contact, make_topic, make_user

TEXT = "Ja, ich möchte den Newsletter der Beispiel GmbH.\nAbmeldung jederzeit per Link."
FORM = Origin(source="form:Xq3", ip="198.51.100.23", user_agent="Mozilla/5.0 <Probe> Firefox/128")
CLICK = Origin(source="link", ip="203.0.113.9", user_agent='Safari/17 "mobile"')


def signed_up(app: Flask, session: Session, clock: FrozenClock) -> tuple[Contact, Message]:
    """A contact who signed up through a form and confirmed an hour later."""
    settings = app.extensions["nurture"].settings
    news = make_topic(session, clock, "news", name="Newsletter")
    make_contact(session, clock, email="anna@kunde.example", first_name="Anna", last_name="Berg")
    clock.advance(seconds=7)
    request = request_optin(
        session,
        email="anna@kunde.example",
        data={},
        topics=[news],
        text=TEXT,
        language="de",
        origin=FORM,
        now=clock.now(),
        settings=settings,
    )
    assert request is not None
    mail = session.get(Message, request.message_id)
    assert mail is not None
    token = confirmation_token(SECRET, mail.token)
    clock.advance(hours=1, minutes=2, seconds=3)
    confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    session.commit()
    contact = session.scalars(select(Contact).where(Contact.email == "anna@kunde.example")).one()
    return contact, mail


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> None:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302


def test_the_proof_shows_every_entry_to_the_second_with_text_and_mail(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact, mail = signed_up(app, session, clock)
    _as(client, session, clock, Role.SALES)
    response = client.get(f"/contacts/{contact.id}/consent-proof")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    text = session.scalars(select(ConsentText)).one()
    for expected in (
        "anna@kunde.example",
        "Anna Berg",
        "2026-01-05 09:00:07 UTC",  # requested
        "2026-01-05 10:02:10 UTC",  # confirmed
        "Requested (double opt-in mail sent)",
        "Confirmed",
        "<code>form:Xq3</code>",
        "198.51.100.23",
        "203.0.113.9",
        str(escape(FORM.user_agent)),
        str(escape(CLICK.user_agent)),
        text.sha256,
        str(escape(TEXT)),
        str(escape(f"<{mail.token}@nurture.example>")),
        'id="proof-state-news"',
        "Consent given",
        "Not on the list",
        "js/consent-print.js",
    ):
        assert expected in html, expected
    # The text is printed once, however many entries name it.
    assert html.count(f'id="proof-text-{text.id}"') == 1
    ledger = html[html.index('id="proof-ledger"') :]
    assert ledger.index("09:00:07") < ledger.index("10:02:10")


def test_the_proof_names_the_suppression(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock, email="weg@kunde.example")
    secret = app.extensions["nurture"].settings.suppression_secret
    suppress(
        session,
        secret=secret,
        email="Weg@Kunde.example",
        reason=SuppressionReason.UNSUBSCRIBED,
        now=clock.now(),
    )
    session.commit()
    _as(client, session, clock, Role.MARKETER)
    html = client.get(f"/contacts/{contact.id}/consent-proof").get_data(as_text=True)
    assert "On the list since 2026-01-05 09:00:00 UTC: unsubscribed from everything" in html
    assert 'id="proof-ledger-empty"' in html


def test_the_proof_needs_a_login_and_a_contact(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact = make_contact(session, clock)
    session.commit()
    assert client.get(f"/contacts/{contact.id}/consent-proof").status_code == 302
    _as(client, session, clock, Role.SALES)
    assert client.get("/contacts/999999/consent-proof").status_code == 404
    assert client.get(f"/contacts/{2**63}/consent-proof").status_code == 404


def test_the_contact_page_has_a_consent_card_with_actions_by_role(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    contact, _mail = signed_up(app, session, clock)
    make_topic(session, clock, "offers", name="Angebote")
    session.commit()
    url = f"/contacts/{contact.id}"

    _as(client, session, clock, Role.SALES)
    html = client.get(url).get_data(as_text=True)
    assert 'id="people-consent"' in html
    assert 'id="people-consent-news"' in html and "Consent given" in html
    assert 'id="people-consent-offers"' in html and "No consent" in html
    assert f'href="/contacts/{contact.id}/consent-proof"' in html
    assert f"/contacts/{contact.id}/export" not in html
    assert f"/contacts/{contact.id}/erase" not in html

    client = app.test_client()
    _as(client, session, clock, Role.MARKETER)
    html = client.get(url).get_data(as_text=True)
    assert f"/contacts/{contact.id}/export" in html
    assert f"/contacts/{contact.id}/erase" not in html

    client = app.test_client()
    _as(client, session, clock, Role.ADMIN)
    html = client.get(url).get_data(as_text=True)
    assert f"/contacts/{contact.id}/export" in html
    assert f"/contacts/{contact.id}/erase" in html

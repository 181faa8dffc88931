"""Re-permission services: who approaches the dormancy limit, the one mail that asks to renew,
its refusals, and the gate letting an unanswered consent lapse while a confirmed one goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.config import Settings
from nurture.consent import gate
from nurture.consent.existing_customers import record_existing_customer
from nurture.consent.ledger import ConsentError, Origin, record
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentText,
    SuppressionReason,
    Topic,
    TopicKind,
)
from nurture.consent.optin import confirm, expire_requests
from nurture.consent.repermission import (
    Row,
    approaching_dormancy,
    is_dormant,
    lapse_moment,
    send_repermission,
    send_repermissions,
)
from nurture.consent.suppression import suppress
from nurture.contacts.models import Contact
from nurture.events import record_event
from nurture.mail import outbox
from nurture.mail.identity import confirmation_token
from nurture.mail.models import Message, Purpose
from nurture.mail.render import check_template, load_builtin, sample_context
from nurture.mail.templates import TemplateDraft, create_template, latest_version
from tests.conftest import SECRET
from tests.factories import grant_consent, make_contact, make_topic

_mails = count(1)
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# 24 months (the default) after START: consents granted at START lapse right after this.
LAPSE = datetime(2028, 1, 5, 9, 0, tzinfo=UTC)
MARKETER = Origin(source="user:7")
CLICK = Origin(source="confirmation_page", ip="198.51.100.9", user_agent="Mozilla/5.0 Firefox")


def _subscriber(
    session: Session, clock: FrozenClock, email: str, *slugs: str, **fields: object
) -> Contact:
    contact = make_contact(session, clock, email=email, **fields)
    for slug in slugs or ("news",):
        grant_consent(session, clock, contact, slug)
    return contact


def _event(session: Session, contact: Contact, type: str, at: datetime) -> None:
    record_event(session, type, now=at, occurred_at=at, contact_id=contact.id)


def _emails(rows: list[Row]) -> list[str]:
    return [row.email for row in rows]


def _list(session: Session, clock: FrozenClock, settings: Settings, **kwargs: object) -> list[Row]:
    return approaching_dormancy(session, now=clock.now(), settings=settings, **kwargs)  # type: ignore[arg-type]


def _send(
    session: Session, clock: FrozenClock, settings: Settings, contact: Contact, *slugs: str
) -> ConsentRequest:
    topics = [make_topic(session, clock, slug) for slug in slugs or ("news",)]
    return send_repermission(
        session, contact, topics=topics, now=clock.now(), settings=settings, origin=MARKETER
    )


def _refusal(excinfo: pytest.ExceptionInfo[ConsentError]) -> str:
    return str(excinfo.value)


# -- dates ----------------------------------------------------------------------------------------


def test_the_lapse_moment_is_where_the_gate_starts_refusing() -> None:
    alive = datetime(2026, 3, 12, 10, 30, tzinfo=UTC)
    moment = lapse_moment(alive, 24)
    assert moment == datetime(2028, 3, 12, 10, 30, tzinfo=UTC)
    assert not is_dormant(alive, moment, 24)
    assert is_dormant(alive, moment + timedelta(seconds=1), 24)
    # 31 January plus one month: the gate clamps to the short month, so the consent lasts
    # to the end of February and lapses as March begins.
    alive = datetime(2027, 1, 31, 18, 0, tzinfo=UTC)
    moment = lapse_moment(alive, 1)
    assert moment == datetime(2027, 3, 1, 0, 0, tzinfo=UTC)
    assert not is_dormant(alive, moment - timedelta(seconds=1), 1)
    assert is_dormant(alive, moment, 1)


# -- the list -------------------------------------------------------------------------------------


def test_the_list_holds_granted_consents_lapsing_within_the_window(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    tracking = make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    shop = make_topic(session, clock, "shop", own_similar_products=True)
    early = _subscriber(session, clock, "early@kunde.example")  # lapses before the others
    clock.advance(days=60)
    anna = _subscriber(session, clock, "anna@kunde.example", "news", "offers", first_name="Anna")
    active = _subscriber(session, clock, "active@kunde.example")
    suppressed = _subscriber(session, clock, "gone@kunde.example")
    withdrawn = _subscriber(session, clock, "withdrawn@kunde.example")
    record(
        session,
        contact_id=withdrawn.id,
        topic=make_topic(session, clock, "news"),
        action=Action.WITHDRAWN,
        origin=Origin(source="link:x"),
        now=clock.now(),
    )
    only_tracking = make_contact(session, clock, email="tracking@kunde.example")
    grant_consent(session, clock, only_tracking, tracking.slug)
    customer = make_contact(session, clock, email="customer@kunde.example")
    record_existing_customer(
        session,
        customer,
        shop,
        sale_reference="Bestellung 1",
        notice_text="Widerspruch jederzeit möglich.",
        origin=Origin(source="import:kunden.csv"),
        now=clock.now(),
    )
    suppress(
        session,
        secret=settings.suppression_secret,
        email=suppressed.email,
        reason=SuppressionReason.HARD_BOUNCE,
        now=clock.now(),
    )
    granted = clock.now()
    # An old sign of life counts for nothing; a later one moves the lapse.
    _event(session, anna, "order", granted - timedelta(days=400))
    _event(session, active, "clicked", granted + timedelta(days=200))
    # Mail we sent is not a sign of life from them.
    _event(session, anna, "sent", granted + timedelta(days=300))

    clock.set(lapse_moment(granted, 24) - timedelta(days=30))
    rows = _list(session, clock, settings)
    # "early" lapsed already (60 days before the others): even a re-permission is too late.
    assert _emails(rows) == ["anna@kunde.example"]
    (row,) = rows
    assert (row.contact_id, row.first_name, row.last_sign_of_life) == (
        anna.id,
        "Anna",
        granted - timedelta(days=400),
    )
    assert [(t.slug, t.lapses_at) for t in row.topics] == [
        ("news", lapse_moment(granted, 24)),
        ("offers", lapse_moment(granted, 24)),
    ]
    assert row.lapses_at == lapse_moment(granted, 24)
    assert is_dormant(granted, clock.now(), 24) is False
    assert _list(session, clock, settings, within_days=29) == []
    assert early.id < anna.id


def test_the_list_pages_by_contact_id_and_skips_suppressed_contacts(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    contacts = [
        _subscriber(session, clock, f"p{i}@kunde.example", "news", "offers") for i in range(5)
    ]
    for contact in contacts[1:3]:
        suppress(
            session,
            secret=settings.suppression_secret,
            email=contact.email,
            reason=SuppressionReason.COMPLAINT,
            now=clock.now(),
        )
    clock.set(LAPSE - timedelta(days=10))
    first = _list(session, clock, settings, limit=2)
    # A page is filled past the suppressed ones; each row carries all its topics.
    assert [r.contact_id for r in first] == [contacts[0].id, contacts[3].id]
    assert all(len(r.topics) == 2 for r in first)
    rest = _list(session, clock, settings, limit=2, after=first[-1].contact_id)
    assert [r.contact_id for r in rest] == [contacts[4].id]
    assert _list(session, clock, settings, after=contacts[4].id) == []
    narrowed = _list(session, clock, settings, contact_ids=[contacts[3].id, contacts[1].id])
    assert [r.contact_id for r in narrowed] == [contacts[3].id]


# -- sending --------------------------------------------------------------------------------------


def test_one_mail_asks_about_all_approaching_topics_and_is_recorded(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    anna = _subscriber(
        session, clock, "anna@kunde.example", "news", "offers", first_name="Anna", last_name="Berg"
    )
    clock.set(LAPSE - timedelta(days=30))
    request = _send(session, clock, settings, anna, "news", "offers")

    assert (request.contact_id, request.repermission, request.source) == (
        anna.id,
        True,
        "repermission:user:7",
    )
    requested = session.scalars(
        select(ConsentEntry).where(ConsentEntry.action == Action.REQUESTED)
    ).all()
    assert sorted(e.topic_id for e in requested) == sorted(request.topic_ids)
    assert {e.source for e in requested} == {"repermission:user:7"}
    text = session.get(ConsentText, request.text_id)
    assert text is not None and text.language == "de"
    assert text.text == (
        "Ja, ich möchte weiterhin E-Mails von nurture zu folgenden Themen erhalten: News, "
        "Offers. Meine Einwilligung kann ich jederzeit mit Wirkung für die Zukunft widerrufen, "
        "zum Beispiel über den Abmeldelink in jeder E-Mail."
    )
    assert {e.text_hash for e in requested} == {text.sha256}

    # ONE mail for the contact, transactional like every confirmation request.
    (message,) = session.scalars(select(Message)).all()
    assert (message.builtin, message.purpose, message.to_addr, message.id) == (
        "repermission",
        Purpose.TRANSACTIONAL,
        "anna@kunde.example",
        request.message_id,
    )
    assert message.context["topic"] == "News, Offers"
    assert message.context["lapse_date"] == "5. Januar 2028"
    assert message.context["expires_days"] == 7
    # Its consent stays as it was until the person answers.
    consent = session.get(Consent, (anna.id, make_topic(session, clock, "news").id))
    assert consent is not None and consent.granted_at == START
    # Asked once: no longer listed, and a second mail is refused.
    assert _list(session, clock, settings) == []
    with pytest.raises(ConsentError) as excinfo:
        _send(session, clock, settings, anna, "news")
    assert _refusal(excinfo) == (
        "anna@kunde.example was sent a re-permission mail on 2027-12-06 already. It goes out "
        "once; without an answer the consent lapses."
    )


def test_the_mail_may_not_go_out_after_the_consent_lapsed(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    anna = _subscriber(session, clock, "anna@kunde.example", language="en")
    clock.set(LAPSE - timedelta(days=2))
    request = _send(session, clock, settings, anna)
    message = session.get(Message, request.message_id)
    assert message is not None
    # The link would live 7 days, but the mail is advertising: it may not leave after the lapse.
    assert message.expires_at == LAPSE
    assert request.expires_at == clock.now() + timedelta(days=7)
    assert (message.context["lang"], message.context["lapse_date"]) == ("en", "January 5, 2028")
    text = session.get(ConsentText, request.text_id)
    assert text is not None and text.text.startswith(
        "Yes, I would like to keep receiving emails from nurture about: News."
    )
    clock.set(LAPSE + timedelta(seconds=1))
    assert outbox.cancel_late(session, now=clock.now()) == 1


def test_refusals_name_the_reason(session: Session, clock: FrozenClock, settings: Settings) -> None:
    lapsed = _subscriber(session, clock, "lapsed@kunde.example")
    gone = _subscriber(session, clock, "gone@kunde.example")
    never = make_contact(session, clock, email="never@kunde.example")
    make_topic(session, clock, "offers")
    suppress(
        session,
        secret=settings.suppression_secret,
        email=gone.email,
        reason=SuppressionReason.UNSUBSCRIBED,
        now=clock.now(),
    )
    clock.set(LAPSE + timedelta(hours=1))
    with pytest.raises(ConsentError) as excinfo:
        _send(session, clock, settings, lapsed)
    assert _refusal(excinfo) == (
        "The consent of lapsed@kunde.example to News has lapsed already (no sign of life for 24 "
        "months). A re-permission mail is advertising too and may only be sent while the "
        "consent is still valid."
    )
    with pytest.raises(ConsentError) as excinfo:
        _send(session, clock, settings, gone)
    assert _refusal(excinfo) == (
        "gone@kunde.example is on the suppression list (unsubscribed, bounced or erased); no "
        "re-permission mail may go to this address."
    )
    with pytest.raises(ConsentError) as excinfo:
        _send(session, clock, settings, never, "offers")
    assert _refusal(excinfo) == (
        "never@kunde.example has no confirmed consent to Offers. A re-permission mail can only "
        "renew a consent that exists; ask for a new sign-up instead."
    )
    with pytest.raises(ConsentError) as excinfo:
        send_repermission(
            session, never, topics=[], now=clock.now(), settings=settings, origin=MARKETER
        )
    assert _refusal(excinfo) == "Choose at least one topic to ask never@kunde.example about."
    assert session.scalars(select(Message)).all() == []
    assert session.scalars(select(ConsentRequest)).all() == []


def test_the_address_limit_of_confirmation_mails_applies(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    anna = _subscriber(session, clock, "anna@kunde.example", "news", "offers")
    clock.set(LAPSE - timedelta(days=5))
    limited = settings.with_overrides(optin_mails_per_address_day=1)
    news, offers = make_topic(session, clock, "news"), make_topic(session, clock, "offers")
    send_repermission(
        session, anna, topics=[news], now=clock.now(), settings=limited, origin=MARKETER
    )
    with pytest.raises(ConsentError) as excinfo:
        send_repermission(
            session, anna, topics=[offers], now=clock.now(), settings=limited, origin=MARKETER
        )
    assert _refusal(excinfo) == (
        "anna@kunde.example has had as many confirmation mails today as allowed; try again "
        "tomorrow."
    )


def test_a_bulk_send_asks_each_contact_once_and_reports_refusals(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    mixed = _subscriber(session, clock, "mixed@kunde.example", "news")
    clock.advance(days=30)
    grant_consent(session, clock, mixed, "offers")  # lapses 30 days after "news"
    clock.advance(days=200)
    fresh = _subscriber(session, clock, "fresh@kunde.example")  # far from lapsing
    clock.set(LAPSE + timedelta(days=10))
    # "news" of mixed lapsed already; "offers" lapses in 20 days and is asked about alone.
    selected = [mixed.id, fresh.id, mixed.id, 999_999]
    outcome = send_repermissions(
        session, selected, now=clock.now(), settings=settings, origin=MARKETER
    )
    (request,) = outcome.queued
    assert request.contact_id == mixed.id
    assert request.topic_ids == [make_topic(session, clock, "offers").id]
    assert [(r.contact_id, str(r.error)) for r in outcome.refused] == [
        (
            fresh.id,
            "The consent of fresh@kunde.example does not lapse within the next 60 days, so "
            "there is nothing to renew yet.",
        ),
        (999_999, "Contact 999999 no longer exists."),
    ]
    again = send_repermissions(
        session, [mixed.id], now=clock.now(), settings=settings, origin=MARKETER
    )
    assert again.queued == ()
    assert [str(r.error) for r in again.refused] == [
        "mixed@kunde.example was sent a re-permission mail on 2028-01-15 already. It goes out "
        "once; without an answer the consent lapses."
    ]


# -- the gate: no answer lapses, a confirmation renews ---------------------------------------------


def _marketing_mail(session: Session, app: Flask, clock: FrozenClock, contact: Contact) -> Message:
    number = next(_mails)
    template = create_template(
        session,
        name=f"Comeback {number}",
        draft=TemplateDraft(subject="Neu bei uns", html="<p>{{ salutation }}, schauen Sie.</p>"),
        now=clock.now(),
        imprint=app.extensions["nurture"].settings.sender_imprint,
    )
    version = latest_version(session, template.id)
    assert version is not None
    message = outbox.enqueue(
        session,
        key=f"campaign:{number}",
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        context={},
        template_version_id=version.id,
        contact_id=contact.id,
        topic="news",
        now=clock.now(),
    )
    assert message is not None
    return message


def _verdict(session: Session, app: Flask, clock: FrozenClock, contact: Contact) -> str | None:
    message = _marketing_mail(session, app, clock, contact)
    return gate.check(session, message, clock.now(), app.extensions["nurture"].settings)


def test_without_an_answer_the_consent_lapses_and_a_confirmation_renews_it(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    settings = app.extensions["nurture"].settings
    silent = _subscriber(session, clock, "silent@kunde.example")
    answers = _subscriber(session, clock, "answers@kunde.example")
    clock.set(LAPSE - timedelta(days=3))
    assert _verdict(session, app, clock, silent) is None
    _send(session, clock, settings, silent)
    request = _send(session, clock, settings, answers)
    token = confirmation_token(SECRET, session.get(Message, request.message_id).token)  # type: ignore[union-attr]

    # Past the lapse date: both consents are dormant, the re-permission mail changes nothing.
    clock.set(LAPSE + timedelta(days=1))
    assert _verdict(session, app, clock, silent) == gate.DORMANT == "consent_dormant"
    assert _verdict(session, app, clock, answers) == "consent_dormant"
    # The link is still valid (7 days): confirming renews the consent as a new ledger entry.
    confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    assert _verdict(session, app, clock, answers) is None
    assert _verdict(session, app, clock, silent) == "consent_dormant"
    news = make_topic(session, clock, "news")
    entries = session.scalars(
        select(ConsentEntry).where(ConsentEntry.contact_id == answers.id).order_by(ConsentEntry.id)
    ).all()
    assert [e.action for e in entries] == [Action.CONFIRMED, Action.REQUESTED, Action.RECONFIRMED]
    renewal = entries[-1]
    assert (renewal.at, renewal.source, renewal.ip, renewal.request_id) == (
        clock.now(),
        "repermission:user:7",
        CLICK.ip,
        request.id,
    )
    assert renewal.text_hash == entries[1].text_hash
    assert renewal.evidence["mail_template"] == "builtin:repermission"
    consent = session.get(Consent, (answers.id, news.id))
    assert consent is not None and consent.granted_at == clock.now()

    # Unanswered requests expire without touching the granted state; the ledger keeps no
    # "expired" for a topic that was never pending.
    clock.advance(days=7)
    assert expire_requests(session, now=clock.now()) == 1
    actions = session.scalars(
        select(ConsentEntry.action).where(ConsentEntry.contact_id == silent.id)
    ).all()
    assert actions == [Action.CONFIRMED, Action.REQUESTED]
    # Two years on, the renewed consent approaches its own limit and may be asked about again.
    clock.set(lapse_moment(consent.granted_at, 24) - timedelta(days=10))
    assert _emails(_list(session, clock, settings)) == ["answers@kunde.example"]


def test_a_sign_of_life_after_the_mail_starts_a_new_period(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    anna = _subscriber(session, clock, "anna@kunde.example")
    clock.set(LAPSE - timedelta(days=20))
    _send(session, clock, settings, anna)
    ordered = clock.advance(hours=2)
    _event(session, anna, "order", ordered)
    assert _list(session, clock, settings) == []
    clock.set(lapse_moment(ordered, 24) - timedelta(days=20))
    (row,) = _list(session, clock, settings)
    assert (row.email, row.last_sign_of_life, row.lapses_at) == (
        "anna@kunde.example",
        ordered,
        lapse_moment(ordered, 24),
    )
    assert session.get(Topic, row.topics[0].topic_id) is not None


def test_the_mail_reads_well_without_a_lapse_date() -> None:
    # request_optin(repermission=True) may be called without the date; the mail still renders.
    for lang, fallback in (
        ("de", "erhalten Sie bald keine E-Mails"),
        ("en", "stop sending you emails about “Newsletter” soon"),
    ):
        context = sample_context(lang=lang)
        del context["lapse_date"]
        mail = check_template(load_builtin("repermission"), context)
        assert fallback in mail.text and "{" not in mail.text

"""Double opt-in services: request, confirm, expire — against the real ledger and outbox."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.config import Settings
from nurture.consent.ledger import ConsentError, Origin
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentState,
    SignupAttempt,
    SuppressionReason,
    Topic,
    TopicKind,
)
from nurture.consent.optin import (
    ExpiredLink,
    InvalidLink,
    SuppressedAddress,
    confirm,
    expire_requests,
    request_optin,
)
from nurture.consent.suppression import suppress
from nurture.contacts.fields import ContactDataError
from nurture.contacts.models import Contact
from nurture.mail.identity import confirmation_token, message_id_header
from nurture.mail.models import Message, Purpose
from nurture.worker import Worker
from tests.conftest import SECRET
from tests.factories import grant_consent, make_contact, make_topic

TEXT = "Ja, ich möchte den Newsletter der Beispiel GmbH erhalten. Abmeldung jederzeit möglich."
SIGNUP = Origin(source="form:abc", ip="203.0.113.7", user_agent="Mozilla/5.0 (X11) Firefox/140")
CLICK = Origin(source="confirmation_page", ip="198.51.100.9", user_agent="Mozilla/5.0 Safari/18")


def _request(
    session: Session,
    clock: FrozenClock,
    settings: Settings,
    *,
    email: str = "anna@kunde.example",
    topics: list[Topic] | None = None,
    data: dict[str, object] | None = None,
    **kwargs: object,
) -> ConsentRequest | None:
    return request_optin(
        session,
        email=email,
        data=data if data is not None else {"first_name": "Anna", "last_name": "Müller"},
        topics=topics if topics is not None else [make_topic(session, clock, "news")],
        text=TEXT,
        language="de",
        origin=SIGNUP,
        now=clock.now(),
        settings=settings,
        **kwargs,  # type: ignore[arg-type]
    )


def _token(session: Session, request: ConsentRequest) -> str:
    """The token as the person gets it: derived from the mail when the worker builds it."""
    message = session.get(Message, request.message_id)
    assert message is not None
    return confirmation_token(SECRET, message.token)


def _ledger(session: Session, contact_id: int) -> list[tuple[str, Action]]:
    rows = session.execute(
        select(Topic.slug, ConsentEntry.action)
        .join(Topic, Topic.id == ConsentEntry.topic_id)
        .where(ConsentEntry.contact_id == contact_id)
        .order_by(ConsentEntry.id)
    )
    return [(slug, action) for slug, action in rows]


def _state(session: Session, contact_id: int, topic: Topic) -> ConsentState | None:
    row = session.get(Consent, (contact_id, topic.id))
    return row.state if row is not None else None


def test_a_signup_creates_the_contact_a_pending_request_and_queues_the_mail(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    # A new address signs up for one topic: contact, request, ledger "requested", mail queued.
    request = _request(session, clock, settings)
    assert request is not None
    contact = session.get(Contact, request.contact_id)
    assert contact is not None
    assert (contact.email, contact.first_name, contact.last_name) == (
        "anna@kunde.example",
        "Anna",
        "Müller",
    )
    assert (contact.language, contact.source) == ("de", "form:abc")
    assert request.expires_at == clock.now() + timedelta(days=7)
    assert (request.ip, request.user_agent, request.source) == (
        SIGNUP.ip,
        SIGNUP.user_agent,
        "form:abc",
    )
    news = make_topic(session, clock, "news")
    assert _ledger(session, contact.id) == [("news", Action.REQUESTED)]
    entry = session.scalars(select(ConsentEntry)).one()
    assert (entry.ip, entry.user_agent, entry.request_id) == (
        SIGNUP.ip,
        SIGNUP.user_agent,
        request.id,
    )
    assert entry.text_hash == hashlib.sha256(f"de\n{TEXT}".encode()).hexdigest()
    assert _state(session, contact.id, news) is ConsentState.PENDING

    message = session.get(Message, request.message_id)
    assert message is not None
    assert (message.key, message.purpose, message.builtin) == (
        f"optin:request:{request.id}",
        Purpose.TRANSACTIONAL,
        "optin_confirmation",
    )
    assert (message.to_addr, message.contact_id, message.topic) == (
        "anna@kunde.example",
        contact.id,
        None,
    )
    token = _token(session, request)
    # The link is derived when the mail is built; no table holds it.
    assert "confirm_url" not in message.context
    assert token not in str(message.context)
    assert message.context["expires_days"] == 7
    assert message.context["topic"] == "News"
    assert message.context["salutation"] == "Guten Tag Anna Müller"
    # Only the token's hash is kept with the request.
    assert request.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in request.token_hash


def test_the_mail_speaks_the_language_of_the_signup(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    make_contact(
        session, clock, email="tom@kunde.example", language="de", gender="male", last_name="Weber"
    )
    request = request_optin(
        session,
        email="tom@kunde.example",
        data={},
        topics=[make_topic(session, clock, "news")],
        text="Yes, send me the newsletter.",
        language="en",
        origin=SIGNUP,
        now=clock.now(),
        settings=settings,
    )
    assert request is not None
    message = session.get(Message, request.message_id)
    assert message is not None
    assert (message.context["lang"], message.context["salutation"]) == ("en", "Dear Mr Weber")


def test_a_signup_fills_gaps_and_never_overwrites_or_blanks_what_is_known(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    # Whoever types an address is not proven to own it: they must not rename the contact.
    contact = make_contact(
        session, clock, email="anna@kunde.example", first_name="Anna", last_name="", city="Köln"
    )
    request = _request(
        session,
        clock,
        settings,
        email="ANNA@kunde.example",
        data={"first_name": "Mallory", "last_name": "Müller", "city": "", "gender": "female"},
    )
    assert request is not None and request.contact_id == contact.id
    session.refresh(contact)
    assert (contact.first_name, contact.last_name, contact.city, contact.gender) == (
        "Anna",
        "Müller",
        "Köln",
        "female",
    )
    assert session.scalar(select(func.count()).select_from(Contact)) == 1


def test_a_signup_refuses_bad_data_with_field_errors(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    with pytest.raises(ContactDataError) as caught:
        _request(session, clock, settings, email="not an address", data={"tags": ["vip"]})
    assert set(caught.value.errors) == {"email", "tags"}
    with pytest.raises(ConsentError, match="Choose at least one topic"):
        _request(session, clock, settings, topics=[])
    tracking = make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    with pytest.raises(ConsentError, match="Choose at least one topic"):
        _request(session, clock, settings, topics=[tracking])
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_a_suppressed_address_cannot_sign_up_again(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    suppress(
        session,
        secret=settings.suppression_secret,
        email="anna@kunde.example",
        reason=SuppressionReason.UNSUBSCRIBED,
        now=clock.now(),
    )
    with pytest.raises(SuppressedAddress) as caught:
        _request(session, clock, settings, email="Anna@Kunde.example")
    assert caught.value.message.startswith("This address has asked not to be mailed")
    assert session.scalar(select(func.count()).select_from(Contact)) == 0
    assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_tracking_consent_is_requested_only_when_ticked(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    news = make_topic(session, clock, "news")
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    plain = _request(session, clock, settings, email="a@kunde.example", topics=[news])
    tracked = _request(
        session, clock, settings, email="b@kunde.example", topics=[news], ask_tracking=True
    )
    assert plain is not None and tracked is not None
    assert _ledger(session, plain.contact_id) == [("news", Action.REQUESTED)]
    assert _ledger(session, tracked.contact_id) == [
        ("news", Action.REQUESTED),
        ("tracking", Action.REQUESTED),
    ]
    # The mail names the topics, not the tracking.
    message = session.get(Message, tracked.message_id)
    assert message is not None and message.context["topic"] == "News"


def test_no_mail_when_every_topic_is_granted_already(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    # A re-request of a confirmed address: no mail, no ledger entry, no hint to the caller.
    contact = make_contact(session, clock, email="anna@kunde.example")
    grant_consent(session, clock, contact, "news")
    before = _ledger(session, contact.id)
    assert _request(session, clock, settings) is None
    assert _ledger(session, contact.id) == before
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    # A topic not granted yet still gets its request (and the mail).
    offers = make_topic(session, clock, "offers")
    news = make_topic(session, clock, "news")
    assert _request(session, clock, settings, topics=[news, offers]) is not None


def test_at_most_the_configured_number_of_mails_per_address_and_day(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    # Repeated sign-ups cannot turn into a mail storm at someone's inbox.
    sent = [_request(session, clock, settings, email="anna@kunde.example") for _ in range(5)]
    assert [r is not None for r in sent] == [True, True, True, False, False]
    assert session.scalar(select(func.count()).select_from(Message)) == 3
    # The limit counts by keyed hash, never the address in clear.
    keys = session.scalars(select(SignupAttempt.key)).all()
    assert len(keys) == 3 and all(k.startswith("mail:") and "anna" not in k for k in keys)
    clock.advance(hours=24, seconds=1)
    assert _request(session, clock, settings, email="anna@kunde.example") is not None


def test_confirm_grants_every_topic_with_the_evidence_of_both_steps(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    news = make_topic(session, clock, "news")
    offers = make_topic(session, clock, "offers")
    request = _request(session, clock, settings, topics=[news, offers])
    assert request is not None
    token = _token(session, request)
    clock.advance(minutes=5)
    confirmed = confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    assert confirmed.id == request.id and confirmed.confirmed_at == clock.now()
    contact_id = request.contact_id
    assert _ledger(session, contact_id) == [
        ("news", Action.REQUESTED),
        ("offers", Action.REQUESTED),
        ("news", Action.CONFIRMED),
        ("offers", Action.CONFIRMED),
    ]
    assert _state(session, contact_id, news) is ConsentState.GRANTED
    assert _state(session, contact_id, offers) is ConsentState.GRANTED
    message = session.get(Message, request.message_id)
    assert message is not None
    entries = session.scalars(
        select(ConsentEntry).where(ConsentEntry.action == Action.CONFIRMED)
    ).all()
    for entry in entries:
        assert (entry.ip, entry.user_agent) == (CLICK.ip, CLICK.user_agent)
        assert (entry.source, entry.request_id) == ("form:abc", request.id)
        assert entry.text_id == request.text_id
        assert entry.mail_message_id == message_id_header(message.token, settings.mail_domain)
        assert entry.at == clock.now()
        assert entry.evidence["confirmed_via"] == "confirmation_page"


def test_a_second_confirmation_succeeds_and_records_nothing(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    request = _request(session, clock, settings)
    assert request is not None
    token = _token(session, request)
    confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    count = session.scalar(select(func.count()).select_from(ConsentEntry))
    clock.advance(days=30)  # long past the expiry: a confirmed link stays harmless
    again = confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    assert again.id == request.id
    assert session.scalar(select(func.count()).select_from(ConsentEntry)) == count


def test_unknown_tampered_and_foreign_tokens_confirm_nothing(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    mine = _request(session, clock, settings, email="anna@kunde.example")
    other = _request(session, clock, settings, email="bob@kunde.example")
    assert mine is not None and other is not None
    token = _token(session, mine)
    for bad in ("", "nonsense", token[:-1], token + "x", token.upper()):
        with pytest.raises(InvalidLink) as caught:
            confirm(session, bad, origin=CLICK, now=clock.now(), settings=settings)
        assert caught.value.message.startswith("This confirmation link is not valid")
    # A token confirms its own request and nobody else's.
    confirm(session, _token(session, other), origin=CLICK, now=clock.now(), settings=settings)
    news = make_topic(session, clock, "news")
    assert _state(session, mine.contact_id, news) is ConsentState.PENDING
    assert _state(session, other.contact_id, news) is ConsentState.GRANTED


def test_an_expired_link_asks_to_sign_up_again(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    request = _request(session, clock, settings)
    assert request is not None
    token = _token(session, request)
    clock.advance(days=7)
    with pytest.raises(ExpiredLink) as caught:
        confirm(session, token, origin=CLICK, now=clock.now(), settings=settings)
    assert caught.value.message == "This confirmation link has expired. Please sign up again."
    assert _ledger(session, request.contact_id) == [("news", Action.REQUESTED)]


def test_confirming_after_the_address_was_suppressed_is_refused(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    request = _request(session, clock, settings)
    assert request is not None
    suppress(
        session,
        secret=settings.suppression_secret,
        email="anna@kunde.example",
        reason=SuppressionReason.COMPLAINT,
        now=clock.now(),
    )
    with pytest.raises(SuppressedAddress):
        confirm(session, _token(session, request), origin=CLICK, now=clock.now(), settings=settings)
    assert _ledger(session, request.contact_id) == [("news", Action.REQUESTED)]


def test_a_repermission_request_is_confirmed_as_reconfirmed(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    contact = make_contact(session, clock, email="anna@kunde.example")
    news = grant_consent(session, clock, contact, "news")
    clock.advance(days=600)
    request = _request(session, clock, settings, topics=[news], repermission=True)
    assert request is not None  # granted, but asked to renew: the mail goes out
    confirm(session, _token(session, request), origin=CLICK, now=clock.now(), settings=settings)
    assert _ledger(session, contact.id)[-2:] == [
        ("news", Action.REQUESTED),
        ("news", Action.RECONFIRMED),
    ]
    consent = session.get(Consent, (contact.id, news.id))
    assert consent is not None and consent.granted_at == clock.now()


def test_expiry_records_expired_for_pending_topics_and_deletes_the_request(
    session: Session, clock: FrozenClock, settings: Settings
) -> None:
    news = make_topic(session, clock, "news")
    offers = make_topic(session, clock, "offers")
    lapsed = _request(session, clock, settings, email="a@kunde.example", topics=[news, offers])
    confirmed = _request(session, clock, settings, email="b@kunde.example")
    assert lapsed is not None and confirmed is not None
    confirm(session, _token(session, confirmed), origin=CLICK, now=clock.now(), settings=settings)
    # Meanwhile "offers" was granted to a by other means: its record stays clean.
    contact_a = session.get(Contact, lapsed.contact_id)
    assert contact_a is not None
    grant_consent(session, clock, contact_a, "offers")
    lapsed_id = lapsed.id

    clock.advance(days=6, hours=23)
    assert expire_requests(session, now=clock.now()) == 0
    clock.advance(hours=1)
    assert expire_requests(session, now=clock.now()) == 1
    assert session.get(ConsentRequest, lapsed_id) is None
    assert session.get(ConsentRequest, confirmed.id) is not None  # confirmed ones stay
    assert _ledger(session, contact_a.id)[-1] == ("news", Action.EXPIRED)
    assert _state(session, contact_a.id, news) is ConsentState.NONE
    assert _state(session, contact_a.id, offers) is ConsentState.GRANTED
    expired = session.scalars(
        select(ConsentEntry).where(ConsentEntry.action == Action.EXPIRED)
    ).one()
    assert (expired.source, expired.request_id) == ("system:optin_expiry", lapsed_id)


def test_the_worker_job_expires_requests(app, session: Session, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["nurture"].settings
    request = _request(session, clock, settings)
    assert request is not None
    contact_id = request.contact_id
    session.commit()
    clock.advance(days=8)
    worker = Worker(app.extensions["nurture"], mode="embedded")
    worker.run_job_now("expire_optin_requests")
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(ConsentRequest)) == 0
    assert _ledger(session, contact_id)[-1] == ("news", Action.EXPIRED)
    # The rate-limit hit of the sign-up is older than a day now: purged too.
    assert session.scalar(select(func.count()).select_from(SignupAttempt)) == 0


def test_racing_confirmations_record_the_consent_once(
    app, session: Session, clock: FrozenClock, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    # Two clicks at once (a double click, two devices): one confirmation in the ledger.
    request = _request(session, clock, settings)
    assert request is not None
    token = _token(session, request)
    session.commit()
    db = app.extensions["nurture"].db
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def click() -> None:
        own = db.session()
        try:
            barrier.wait()
            confirm(own, token, origin=CLICK, now=clock.now(), settings=settings)
            own.commit()
            outcomes.append("ok")
        except OperationalError:
            # SQLite refuses the second writer of a stale snapshot outright; no double entry.
            own.rollback()
            outcomes.append("busy")
        finally:
            own.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert "ok" in outcomes and len(outcomes) == 2
    session.expire_all()
    confirmed = select(func.count()).where(ConsentEntry.action == Action.CONFIRMED)
    assert session.scalar(confirmed) == 1

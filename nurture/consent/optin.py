"""Double opt-in: a sign-up becomes a pending request, and only its confirmation grants consent.

A request holds the sha256 of a random token; the token itself goes only into the confirmation
mail, so whoever reads the request table cannot confirm in someone's name. The mail is
transactional (no advertising, no tracking, no unsubscribe block), and only the POST of the
confirmation page confirms: mail scanners prefetch links, so a GET never changes anything.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent.ledger import ConsentError, Origin, record, states, text_version
from nurture.consent.models import (
    Action,
    ConsentRequest,
    ConsentState,
    ConsentText,
    Topic,
    TopicKind,
)
from nurture.consent.signup_forms import ADDRESS_WINDOW, address_key, hit, retry_after
from nurture.consent.signup_forms import tracking_topic as find_tracking_topic
from nurture.consent.suppression import is_suppressed
from nurture.contacts.context import person_of, template_context
from nurture.contacts.fields import LANGUAGES, ContactDataError, clean_contact_data
from nurture.contacts.models import Contact
from nurture.contacts.salutation import salutation
from nurture.contacts.store import find_by_email, upsert_contact
from nurture.errors import N_
from nurture.mail import outbox
from nurture.mail.identity import confirmation_token, message_id_header
from nurture.mail.models import Message, Purpose

TOKEN_BYTES = 32
CONFIRMATION_MAIL = "optin_confirmation"
# Asks someone whose consent approaches the dormancy limit to confirm it again.
REPERMISSION_MAIL = "repermission"
EXPIRY_SOURCE = "system:optin_expiry"
# What a sign-up may say about the person; everything else about a contact is ours to keep.
SIGNUP_FIELDS = frozenset(
    {
        "first_name",
        "last_name",
        "gender",
        "title",
        "formality",
        "language",
        "company",
        "city",
        "country",
        "phone",
        "mobile",
        "website",
    }
)


class SuppressedAddress(ConsentError):
    """The address is on the suppression list; it cannot be signed up again."""


class InvalidLink(ConsentError):
    """No request has this token (mistyped, truncated, forged or already purged)."""


class ExpiredLink(ConsentError):
    """The request was not confirmed in time."""


MSG_SUPPRESSED = N_(
    "This address has asked not to be mailed, or mail to it could not be delivered, so it "
    "cannot be signed up again."
)
MSG_INVALID = N_(
    "This confirmation link is not valid. Please check that you opened the whole link from the "
    "email. If you signed up a while ago, the link may have expired: please sign up again."
)
MSG_EXPIRED = N_("This confirmation link has expired. Please sign up again.")
MSG_NO_TOPIC = N_("Choose at least one topic.")
MSG_NO_TRACKING_TOPIC = N_("Tracking consent was asked for, but no tracking topic exists.")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wanted_topics(session: Session, topics: list[Topic], ask_tracking: bool) -> list[Topic]:
    """The topics a sign-up asks for: at least one marketing topic, plus tracking if ticked."""
    chosen: dict[int, Topic] = {}
    for topic in topics:
        chosen.setdefault(topic.id, topic)
    if not any(t.kind is TopicKind.MARKETING for t in chosen.values()):
        raise ConsentError(MSG_NO_TOPIC)
    if ask_tracking:
        tracking = find_tracking_topic(session)
        if tracking is None:
            raise ConsentError(MSG_NO_TRACKING_TOPIC)
        chosen.setdefault(tracking.id, tracking)
    return list(chosen.values())


def _blank(field: str, value: Any) -> bool:
    # A gender of "unknown" is the column's way of saying nothing.
    return value in ("", None) or (field == "gender" and value == "unknown")


def _signup_values(
    session: Session, email: str, data: dict[str, Any], language: str
) -> dict[str, Any]:
    """The contact data a sign-up may write: it fills gaps, it never overwrites.

    Whoever types an address into a form is not yet proven to own it, so they must not be
    able to rename someone else's contact; and a blank field never erases what we know.
    """
    errors = {k: "is not a sign-up field" for k in data if k not in SIGNUP_FIELDS}
    if language not in LANGUAGES:
        errors["language"] = f"must be one of {', '.join(LANGUAGES)}"
    allowed = {k: v for k, v in data.items() if k in SIGNUP_FIELDS}
    try:
        clean = clean_contact_data({**allowed, "email": email}, require_email=True)
    except ContactDataError as exc:
        raise ContactDataError(exc.errors | errors) from None
    if errors:
        raise ContactDataError(errors)
    given = {k: v for k, v in clean.items() if k != "email" and not _blank(k, v)}
    existing = find_by_email(session, clean["email"])
    if existing is None:
        given.setdefault("language", language)
        return {"email": clean["email"], **given}
    gaps = {
        k: v
        for k, v in given.items()
        if k not in ("language", "formality") and _blank(k, getattr(existing, k))
    }
    return {"email": clean["email"], **gaps}


def all_granted(session: Session, contact_id: int, topics: list[Topic]) -> bool:
    """Whether the contact has a confirmed consent for every one of ``topics``."""
    current = states(session, contact_id)
    return all(t.id in current and current[t.id].state is ConsentState.GRANTED for t in topics)


def request_optin(
    session: Session,
    *,
    email: str,
    data: dict[str, Any],
    topics: list[Topic],
    text: str,
    language: str,
    origin: Origin,
    now: datetime,
    settings: Settings,
    ask_tracking: bool = False,
    repermission: bool = False,
    mail_context: dict[str, Any] | None = None,
    send_by: datetime | None = None,
) -> ConsentRequest | None:
    """Record a sign-up and queue its confirmation mail.

    Returns the pending request, or None when no mail goes out: every topic is granted
    already, or the address had its day's confirmation mails. The caller answers the same
    in every case, so a sign-up form reveals nothing about who is subscribed.

    ``repermission`` asks a consenting contact to confirm again (the re-permission mail);
    ``mail_context`` adds that mail's own variables, and ``send_by`` is when it may no longer
    go out (a re-permission mail is lawful only while the consent it renews is valid).
    """
    if is_suppressed(session, secret=settings.suppression_secret, email=email):
        raise SuppressedAddress(MSG_SUPPRESSED)
    values = _signup_values(session, email, data, language)
    wanted = wanted_topics(session, topics, ask_tracking)
    version = text_version(session, text, language=language, now=now)
    contact, _created = upsert_contact(session, values, now=now, source=origin.source[:100])

    if not repermission and all_granted(session, contact.id, wanted):
        return None
    key = address_key(settings.suppression_secret, contact.email)
    limit = settings.optin_mails_per_address_day
    if retry_after(session, key=key, limit=limit, window=ADDRESS_WINDOW, now=now) is not None:
        return None
    hit(session, key=key, now=now)

    request = ConsentRequest(
        contact_id=contact.id,
        topic_ids=[t.id for t in wanted],
        # Replaced below once the confirmation mail exists: its token is derived from the mail.
        token_hash=token_hash(secrets.token_urlsafe(TOKEN_BYTES)),
        text_id=version.id,
        source=origin.source[:200],
        ip=origin.ip,
        user_agent=(origin.user_agent or None) and origin.user_agent[:500],
        requested_at=now,
        expires_at=now + timedelta(days=settings.optin_expiry_days),
        repermission=repermission,
    )
    session.add(request)
    session.flush()
    for topic in wanted:
        record(
            session,
            contact_id=contact.id,
            topic=topic,
            action=Action.REQUESTED,
            origin=origin,
            now=now,
            text=version,
            request_id=request.id,
        )
    message = _queue_confirmation(
        session, contact, request, wanted, language, settings, now, mail_context, send_by
    )
    if message is not None:
        request.message_id = message.id
        request.token_hash = token_hash(confirmation_token(settings.secret_key, message.token))
    session.flush()
    return request


def _queue_confirmation(
    session: Session,
    contact: Contact,
    request: ConsentRequest,
    topics: list[Topic],
    language: str,
    settings: Settings,
    now: datetime,
    mail_context: dict[str, Any] | None = None,
    send_by: datetime | None = None,
) -> Message | None:
    # The mail speaks the language the person signed up in, whatever the contact had before.
    person = replace(person_of(contact), language=language)
    names = [t.name for t in topics if t.kind is TopicKind.MARKETING]
    context = template_context(contact) | {
        "lang": language,
        "salutation": salutation(person),
        "expires_days": settings.optin_expiry_days,
        "topic": ", ".join(names),
        **(mail_context or {}),
    }
    # A confirmation arriving after its link died would only confuse.
    latest = request.expires_at if send_by is None else min(request.expires_at, send_by)
    return outbox.enqueue(
        session,
        key=f"optin:request:{request.id}",
        purpose=Purpose.TRANSACTIONAL,
        to_addr=contact.email,
        to_name=" ".join(p for p in (contact.first_name, contact.last_name) if p),
        context=context,
        now=now,
        builtin=mail_of(request),
        contact_id=contact.id,
        lateness=latest - now,
    )


def mail_of(request: ConsentRequest) -> str:
    """The built-in mail that asked for ``request``'s confirmation."""
    return REPERMISSION_MAIL if request.repermission else CONFIRMATION_MAIL


def find_request(session: Session, token: str, *, now: datetime) -> ConsentRequest:
    """The request behind ``token`` for the confirmation page; InvalidLink or ExpiredLink."""
    request = session.scalar(
        select(ConsentRequest).where(ConsentRequest.token_hash == token_hash(token))
    )
    if request is None:
        raise InvalidLink(MSG_INVALID)
    if request.confirmed_at is None and request.expires_at <= now:
        raise ExpiredLink(MSG_EXPIRED)
    return request


def request_topics(session: Session, request: ConsentRequest) -> list[Topic]:
    rows = {t.id: t for t in session.scalars(select(Topic).where(Topic.id.in_(request.topic_ids)))}
    return [rows[i] for i in request.topic_ids if i in rows]


def confirm(
    session: Session, token: str, *, origin: Origin, now: datetime, settings: Settings
) -> ConsentRequest:
    """Grant the request's topics; a second confirmation changes nothing and succeeds.

    ``origin`` carries the confirming browser's IP and user agent; the ledger names the
    request's source (form or API), so the proof reads as one sign-up from request to
    confirmation, with the confirmation mail's Message-ID.
    """
    request = find_request(session, token, now=now)
    if request.confirmed_at is not None:
        return request
    contact = session.get(Contact, request.contact_id)
    assert contact is not None  # requests go with their contact (ON DELETE CASCADE)
    if is_suppressed(session, secret=settings.suppression_secret, email=contact.email):
        raise SuppressedAddress(MSG_SUPPRESSED)
    # Claimed with one conditional UPDATE: of two racing confirmations only one records.
    claimed = session.execute(
        update(ConsentRequest)
        .where(ConsentRequest.id == request.id, ConsentRequest.confirmed_at.is_(None))
        .values(confirmed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(request)
    if not claimed.rowcount:  # type: ignore[attr-defined]
        return request
    mail = session.get(Message, request.message_id) if request.message_id else None
    text = session.get(ConsentText, request.text_id)
    evidence: dict[str, Any] = {
        "confirmed_via": origin.source,
        "requested_at": request.requested_at.isoformat(),
        "mail_template": f"builtin:{mail_of(request)}",
        "mail_sent_at": mail.sent_at.isoformat() if mail and mail.sent_at else None,
    }
    action = Action.RECONFIRMED if request.repermission else Action.CONFIRMED
    evidence_origin = Origin(source=request.source, ip=origin.ip, user_agent=origin.user_agent)
    for topic in request_topics(session, request):
        record(
            session,
            contact_id=request.contact_id,
            topic=topic,
            action=action,
            origin=evidence_origin,
            now=now,
            text=text,
            request_id=request.id,
            mail_message_id=message_id_header(mail.token, settings.mail_domain) if mail else None,
            evidence=evidence,
        )
    return request


def expire_requests(session: Session, *, now: datetime) -> int:
    """Requests nobody confirmed in time: ledger ``expired`` per pending topic, then deleted."""
    expired = list(
        session.scalars(
            select(ConsentRequest)
            .where(ConsentRequest.expires_at <= now, ConsentRequest.confirmed_at.is_(None))
            .order_by(ConsentRequest.id)
        )
    )
    origin = Origin(source=EXPIRY_SOURCE)
    for request in expired:
        current = states(session, request.contact_id)
        for topic in request_topics(session, request):
            state = current.get(topic.id)
            # A topic granted meanwhile (another request, an import) keeps its clean record.
            if state is None or state.state is not ConsentState.PENDING:
                continue
            record(
                session,
                contact_id=request.contact_id,
                topic=topic,
                action=Action.EXPIRED,
                origin=origin,
                now=now,
                request_id=request.id,
            )
        session.delete(request)
    session.flush()
    return len(expired)

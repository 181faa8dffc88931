"""The send gate for marketing mail: a pure policy over facts, and the query that gathers them.

A marketing message may be queued and sent only if its contact has a valid basis for the
message's topic — a confirmed, unwithdrawn consent, or the existing-customer exception of
§7(3) UWG for a topic of the sender's own similar products — is not suppressed, has shown a sign
of life within the dormancy limit, and has not paused mail or reached the weekly cap they set.
Transactional mail (the opt-in confirmation itself) passes by its own rule: only suppression
stops it. Test mails go to the marketer and pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent.models import Consent, ConsentState, Suppression, Topic, TopicKind
from nurture.consent.suppression import address_hash
from nurture.contacts.models import Contact
from nurture.events import Event
from nurture.mail.models import Message, MessageState, Purpose

# Behaviour that shows a person still wants to hear from us.
SIGNS_OF_LIFE = ("opened", "clicked", "replied", "order", "call", "meeting")

# Refusal reasons, recorded on the message and as an event.
SUPPRESSED = "suppressed"
NO_CONTACT = "no_contact"
NO_TOPIC = "no_topic"
NO_CONSENT = "no_consent"
DORMANT = "consent_dormant"
PAUSED = "paused"
FREQUENCY_CAP = "frequency_cap"


@dataclass(frozen=True)
class GateFacts:
    purpose: Purpose
    suppressed: bool
    has_contact: bool = True
    topic: Topic | None = None
    state: ConsentState | None = None
    granted_at: datetime | None = None
    last_sign_of_life: datetime | None = None
    paused_until: datetime | None = None
    max_per_week: int | None = None
    sent_last_week: int = 0
    # A re-permission mail is transactional in form but lawful only while some consent of the
    # contact is still valid; None when the rule does not apply.
    still_granted: bool | None = None


def months_before(moment: datetime, months: int) -> datetime:
    """The same day ``months`` earlier (the month's last day when it is shorter)."""
    month_index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(month_index, 12)
    month += 1
    for day in range(moment.day, 0, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def decide(facts: GateFacts, *, now: datetime, dormancy_months: int) -> str | None:
    """The refusal reason, or None when the message may go. Pure: no I/O."""
    if facts.purpose is Purpose.TEST:
        return None
    if facts.suppressed:
        return SUPPRESSED
    if facts.purpose is Purpose.TRANSACTIONAL:
        return NO_CONSENT if facts.still_granted is False else None
    if not facts.has_contact:
        return NO_CONTACT
    if facts.topic is None or facts.topic.kind is not TopicKind.MARKETING:
        return NO_TOPIC
    basis = facts.state is ConsentState.GRANTED or (
        facts.state is ConsentState.EXISTING_CUSTOMER and facts.topic.own_similar_products
    )
    if not basis or facts.granted_at is None:
        return NO_CONSENT
    alive = max(d for d in (facts.granted_at, facts.last_sign_of_life) if d is not None)
    if alive < months_before(now, dormancy_months):
        return DORMANT
    if facts.paused_until is not None and facts.paused_until > now:
        return PAUSED
    if facts.max_per_week is not None and facts.sent_last_week >= facts.max_per_week:
        return FREQUENCY_CAP
    return None


# One round trip for everything but the weekly count, built once: this runs before every
# marketing mail, and five small queries built per call cost more than a fast relay's SMTP.
_LAST_SIGN = (
    select(func.max(Event.occurred_at))
    .where(Event.contact_id == Contact.id, Event.type.in_(SIGNS_OF_LIFE))
    .scalar_subquery()
)
_FACTS = (
    select(
        Contact.paused_until,
        Contact.max_mails_per_week,
        Topic.slug,
        Topic.kind,
        Topic.own_similar_products,
        Consent.state,
        Consent.granted_at,
        _LAST_SIGN,
    )
    .select_from(Contact)
    .outerjoin(Topic, Topic.slug == bindparam("slug"))
    .outerjoin(Consent, (Consent.contact_id == Contact.id) & (Consent.topic_id == Topic.id))
    .where(Contact.id == bindparam("contact_id"))
)
_SUPPRESSED = select(Suppression.id).where(Suppression.address_hash == bindparam("digest"))


def gather(session: Session, message: Message, now: datetime, settings: Settings) -> GateFacts:
    """The facts ``decide`` needs about one message, from the database."""
    purpose = Purpose(message.purpose)
    digest = address_hash(settings.suppression_secret, message.to_addr)
    # Core, not ORM execution: the ORM layer costs more than these two look-ups themselves.
    connection = session.connection()
    suppressed = connection.execute(_SUPPRESSED, {"digest": digest}).first() is not None
    if purpose is Purpose.TRANSACTIONAL and message.builtin == "repermission" and not suppressed:
        granted = session.scalar(
            select(func.count())
            .select_from(Consent)
            .where(Consent.contact_id == message.contact_id, Consent.state == ConsentState.GRANTED)
        )
        return GateFacts(purpose=purpose, suppressed=False, still_granted=bool(granted))
    if purpose is not Purpose.MARKETING or suppressed:
        return GateFacts(purpose=purpose, suppressed=suppressed)
    if message.contact_id is None:
        return GateFacts(purpose=purpose, suppressed=False, has_contact=False)
    row = connection.execute(
        _FACTS, {"contact_id": message.contact_id, "slug": message.topic or ""}
    ).one_or_none()
    if row is None:
        return GateFacts(purpose=purpose, suppressed=False, has_contact=False)
    paused_until, max_per_week, slug, kind, own_similar, state, granted_at, last = row
    topic = (
        Topic(slug=slug, kind=kind, own_similar_products=own_similar) if slug is not None else None
    )
    sent = 0
    if max_per_week is not None:
        sent = (
            session.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.contact_id == message.contact_id,
                    Message.purpose == Purpose.MARKETING,
                    Message.state == MessageState.SENT,
                    Message.sent_at > now - timedelta(days=7),
                )
            )
            or 0
        )
    return GateFacts(
        purpose=purpose,
        suppressed=False,
        topic=topic,
        state=ConsentState(state) if state is not None else None,
        granted_at=granted_at,
        last_sign_of_life=last,
        paused_until=paused_until,
        max_per_week=max_per_week,
        sent_last_week=sent,
    )


def check(session: Session, message: Message, now: datetime, settings: Settings) -> str | None:
    """The gate check the outbox runs before queueing and again right before sending."""
    facts = gather(session, message, now, settings)
    return decide(facts, now=now, dormancy_months=settings.consent_dormancy_months)

"""Re-permission: ask people whose consent nears the dormancy limit to confirm it again.

A consent with no sign of life for ``consent_dormancy_months`` no longer carries marketing mail
(the gate's dormancy rule). Before that happens a marketer may send ONE re-permission mail per
contact, covering every topic that approaches the limit. The mail is itself advertising, so it
is lawful only while the consent is still valid: it is refused once the consent has lapsed, and
the outbox drops it if it could only go out after the lapse. A confirmation renews the consent
as a new ledger entry (``reconfirmed``); no answer needs no action: the gate lets it lapse.

"Asked already" is read from the ledger, not from the pending requests (those are purged when
they expire): a ``requested`` entry from a re-permission source after the contact's last sign
of life means this dormancy period had its mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_date
from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.consent.gate import SIGNS_OF_LIFE, months_before
from nurture.consent.ledger import ConsentError, Origin
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentState,
    Topic,
    TopicKind,
)
from nurture.consent.optin import request_optin
from nurture.consent.suppression import address_hash, is_suppressed, suppressed_hashes
from nurture.contacts.fields import LANGUAGES
from nurture.contacts.models import Contact
from nurture.errors import N_
from nurture.events import Event

# Ledger sources of re-permission requests start with this (the preference centre shows it).
SOURCE_KIND = "repermission"
DEFAULT_WITHIN_DAYS = 60
DEFAULT_LIMIT = 100
# At most this many candidates per query while filling a page; suppressed ones are dropped in
# Python (the suppression list holds keyed hashes, not addresses), and the next query refills.
_BATCH = 500

MSG_SUPPRESSED = N_(
    "%(email)s is on the suppression list (unsubscribed, bounced or erased); no re-permission "
    "mail may go to this address."
)
MSG_NO_TOPIC = N_("Choose at least one topic to ask %(email)s about.")
MSG_NOT_GRANTED = N_(
    "%(email)s has no confirmed consent to %(topics)s. A re-permission mail can only renew a "
    "consent that exists; ask for a new sign-up instead."
)
MSG_LAPSED = N_(
    "The consent of %(email)s to %(topics)s has lapsed already (no sign of life for "
    "%(months)s months). A re-permission mail is advertising too and may only be sent while "
    "the consent is still valid."
)
MSG_ASKED = N_(
    "%(email)s was sent a re-permission mail on %(date)s already. It goes out once; without an "
    "answer the consent lapses."
)
MSG_RATE_LIMITED = N_(
    "%(email)s has had as many confirmation mails today as allowed; try again tomorrow."
)
MSG_NOT_APPROACHING = N_(
    "The consent of %(email)s does not lapse within the next %(days)s days, so there is "
    "nothing to renew yet."
)
MSG_GONE = N_("Contact %(id)s no longer exists.")

# The words the person agrees to by confirming: stored as the request's consent text version.
CONSENT_TEXTS = {
    "de": (
        "Ja, ich möchte weiterhin E-Mails von {sender} zu folgenden Themen erhalten: {topics}. "
        "Meine Einwilligung kann ich jederzeit mit Wirkung für die Zukunft widerrufen, zum "
        "Beispiel über den Abmeldelink in jeder E-Mail."
    ),
    "en": (
        "Yes, I would like to keep receiving emails from {sender} about: {topics}. I can "
        "withdraw my consent at any time with effect for the future, for example with the "
        "unsubscribe link in every email."
    ),
}


@dataclass(frozen=True)
class TopicLapse:
    """One granted marketing topic of a contact and when its consent lapses."""

    topic_id: int
    slug: str
    name: str
    granted_at: datetime
    lapses_at: datetime


@dataclass(frozen=True)
class Row:
    """A contact whose consent approaches the dormancy limit, with the topics concerned."""

    contact_id: int
    email: str
    first_name: str
    last_name: str
    last_sign_of_life: datetime | None
    topics: tuple[TopicLapse, ...]

    @property
    def lapses_at(self) -> datetime:
        return min(t.lapses_at for t in self.topics)


@dataclass(frozen=True)
class Standing:
    """Where one granted marketing topic of a contact stands, for sending."""

    topic: Topic
    granted_at: datetime
    alive: datetime  # max(granted_at, last sign of life): dormancy counts from here
    lapses_at: datetime
    asked_at: datetime | None  # a re-permission request since ``alive``


@dataclass(frozen=True)
class Refusal:
    contact_id: int
    error: ConsentError


@dataclass(frozen=True)
class Outcome:
    """What a bulk send did: the requests queued and the contacts refused, with reasons."""

    queued: tuple[ConsentRequest, ...]
    refused: tuple[Refusal, ...]


# -- dates ---------------------------------------------------------------------------------------


def is_dormant(alive: datetime, moment: datetime, months: int) -> bool:
    """The gate's dormancy rule (gate.decide), for one point in time."""
    return alive < months_before(moment, months)


def lapse_moment(alive: datetime, months: int) -> datetime:
    """When a consent alive at ``alive`` lapses: the gate refuses from just after it.

    ``alive`` plus ``months``; when the target month is too short for the day (31 January
    plus one month), months_before clamps, so the consent lasts to the end of that month.
    """
    index = alive.year * 12 + alive.month - 1 + months
    year, month = divmod(index, 12)
    try:
        return alive.replace(year=year, month=month + 1)
    except ValueError:
        year, month = divmod(index + 1, 12)
        return alive.replace(year=year, month=month + 1, day=1, hour=0, minute=0, second=0)


def lapse_date_text(moment: datetime, language: str) -> str:
    """The lapse date as the mail writes it: "12. März 2027", "March 12, 2027"."""
    return format_date(moment.date(), format="long", locale=language)


# -- the list ------------------------------------------------------------------------------------


def _last_sign() -> Any:
    return (
        select(func.max(Event.occurred_at))
        .where(Event.contact_id == Consent.contact_id, Event.type.in_(SIGNS_OF_LIFE))
        .correlate(Consent)
        .scalar_subquery()
    )


def _asked_since(contact_id: Any, topic_id: Any, since: Any) -> Any:
    """A re-permission request for the topic at or after ``since`` (an SQL expression)."""
    return exists().where(
        ConsentEntry.contact_id == contact_id,
        ConsentEntry.topic_id == topic_id,
        ConsentEntry.action == Action.REQUESTED,
        ConsentEntry.source.startswith(f"{SOURCE_KIND}:", autoescape=True),
        ConsentEntry.at >= since,
    )


def approaching_dormancy(
    session: Session,
    *,
    now: datetime,
    settings: Settings,
    within_days: int = DEFAULT_WITHIN_DAYS,
    limit: int = DEFAULT_LIMIT,
    after: int = 0,
    contact_ids: Sequence[int] | None = None,
) -> list[Row]:
    """Contacts whose granted consent to a marketing topic lapses within ``within_days``.

    The lapse (max(granted_at, last sign of life) + dormancy months) must still be ahead:
    a lapsed consent carries no mail, a re-permission mail included. Suppressed contacts
    and topics asked about in this dormancy period are left out. Ordered by contact id;
    ``after`` is the keyset cursor (the last contact id of the previous page), and
    ``contact_ids`` narrows the list to those contacts.
    """
    months = settings.consent_dormancy_months
    # The gate's rule at both ends: valid now, dormant at the end of the window.
    valid_from = months_before(now, months)
    dormant_from = months_before(now + timedelta(days=within_days), months)
    per_topic = (
        select(
            Consent.contact_id.label("contact_id"),
            Consent.topic_id.label("topic_id"),
            Consent.granted_at.label("granted_at"),
            _last_sign().label("last_sign"),
        )
        .join(Topic, Topic.id == Consent.topic_id)
        .where(
            Consent.state == ConsentState.GRANTED,
            Topic.kind == TopicKind.MARKETING,
            # alive >= granted_at, so this bounds the scan before the events are consulted.
            Consent.granted_at < dormant_from,
        )
    )
    if contact_ids is not None:
        per_topic = per_topic.where(Consent.contact_id.in_(list(contact_ids)))
    c = per_topic.subquery("c")
    alive = case(
        (and_(c.c.last_sign.is_not(None), c.c.last_sign > c.c.granted_at), c.c.last_sign),
        else_=c.c.granted_at,
    )
    base = (
        select(
            c.c.contact_id,
            c.c.topic_id,
            c.c.granted_at,
            c.c.last_sign,
            Contact.email,
            Contact.first_name,
            Contact.last_name,
            Topic.slug,
            Topic.name,
        )
        .join(Contact, Contact.id == c.c.contact_id)
        .join(Topic, Topic.id == c.c.topic_id)
        .where(
            or_(c.c.granted_at >= valid_from, c.c.last_sign >= valid_from),
            or_(c.c.last_sign.is_(None), c.c.last_sign < dormant_from),
            ~_asked_since(c.c.contact_id, c.c.topic_id, alive),
        )
    )
    matching = base.subquery("matching")
    rows: list[Row] = []
    cursor = after
    while len(rows) < limit:
        # Whole contacts per batch: the ids first, then all their topics.
        ids = list(
            session.scalars(
                select(matching.c.contact_id)
                .where(matching.c.contact_id > cursor)
                .distinct()
                .order_by(matching.c.contact_id)
                .limit(min(_BATCH, limit - len(rows)))
            )
        )
        if not ids:
            break
        found = session.execute(
            base.where(c.c.contact_id.in_(ids)).order_by(c.c.contact_id, Topic.name, Topic.id)
        ).all()
        by_contact: dict[int, list[Any]] = {}
        for r in found:
            by_contact.setdefault(r.contact_id, []).append(r)
        hashes = {r.contact_id: address_hash(settings.suppression_secret, r.email) for r in found}
        blocked = suppressed_hashes(session, hashes.values())
        for contact_id in ids:
            topics = by_contact.get(contact_id, [])
            if not topics or hashes[contact_id] in blocked:
                continue
            first = topics[0]
            last_sign = first.last_sign
            rows.append(
                Row(
                    contact_id=contact_id,
                    email=first.email,
                    first_name=first.first_name,
                    last_name=first.last_name,
                    last_sign_of_life=last_sign,
                    topics=tuple(
                        TopicLapse(
                            topic_id=r.topic_id,
                            slug=r.slug,
                            name=r.name,
                            granted_at=r.granted_at,
                            lapses_at=lapse_moment(_alive(r.granted_at, last_sign), months),
                        )
                        for r in topics
                    ),
                )
            )
            if len(rows) == limit:
                break
        cursor = ids[-1]
    return rows


def _alive(granted_at: datetime, last_sign: datetime | None) -> datetime:
    return granted_at if last_sign is None else max(granted_at, last_sign)


# -- sending -------------------------------------------------------------------------------------


def standing(session: Session, contact: Contact, *, settings: Settings) -> list[Standing]:
    """Every granted marketing consent of ``contact``, with its lapse and re-permission."""
    months = settings.consent_dormancy_months
    last_sign = session.scalar(
        select(func.max(Event.occurred_at)).where(
            Event.contact_id == contact.id, Event.type.in_(SIGNS_OF_LIFE)
        )
    )
    granted = session.execute(
        select(Consent, Topic)
        .join(Topic, Topic.id == Consent.topic_id)
        .where(
            Consent.contact_id == contact.id,
            Consent.state == ConsentState.GRANTED,
            Topic.kind == TopicKind.MARKETING,
        )
        .order_by(Topic.name, Topic.id)
    ).all()
    result = []
    for consent, topic in granted:
        assert consent.granted_at is not None  # a granted state always has its time
        alive = _alive(consent.granted_at, last_sign)
        asked = session.scalar(
            select(func.max(ConsentEntry.at)).where(
                ConsentEntry.contact_id == contact.id,
                ConsentEntry.topic_id == topic.id,
                ConsentEntry.action == Action.REQUESTED,
                ConsentEntry.source.startswith(f"{SOURCE_KIND}:", autoescape=True),
                ConsentEntry.at >= alive,
            )
        )
        result.append(
            Standing(
                topic=topic,
                granted_at=consent.granted_at,
                alive=alive,
                lapses_at=lapse_moment(alive, months),
                asked_at=asked,
            )
        )
    return result


def _names(topics: Sequence[Topic]) -> str:
    return ", ".join(t.name for t in topics)


def consent_text(topics: Sequence[Topic], *, language: str, sender: str) -> str:
    """What the person agrees to by confirming, in their language."""
    wording = CONSENT_TEXTS.get(language, CONSENT_TEXTS["de"])
    return wording.format(sender=sender, topics=_names(topics))


def send_repermission(
    session: Session,
    contact: Contact,
    *,
    topics: Sequence[Topic],
    now: datetime,
    settings: Settings,
    origin: Origin,
) -> ConsentRequest:
    """Queue the one re-permission mail asking ``contact`` to confirm ``topics`` again.

    ConsentError when the address is suppressed, a topic has no granted consent or it has
    lapsed already, or this dormancy period had its re-permission mail (topics asked about
    already are dropped; if none remains, that is the refusal). The ledger source is
    ``repermission:<origin.source>``.
    """
    email = contact.email
    if is_suppressed(session, secret=settings.suppression_secret, email=email):
        raise ConsentError(MSG_SUPPRESSED, email=email)
    if not topics:
        raise ConsentError(MSG_NO_TOPIC, email=email)
    by_id = {s.topic.id: s for s in standing(session, contact, settings=settings)}
    missing = [t for t in topics if t.id not in by_id]
    if missing:
        raise ConsentError(MSG_NOT_GRANTED, email=email, topics=_names(missing))
    months = settings.consent_dormancy_months
    lapsed = [t for t in topics if is_dormant(by_id[t.id].alive, now, months)]
    if lapsed:
        raise ConsentError(MSG_LAPSED, email=email, topics=_names(lapsed), months=months)
    fresh = [t for t in topics if by_id[t.id].asked_at is None]
    if not fresh:
        asked = max(by_id[t.id].asked_at or now for t in topics)
        raise ConsentError(MSG_ASKED, email=email, date=asked.date().isoformat())

    language = contact.language if contact.language in LANGUAGES else "de"
    lapses_at = min(by_id[t.id].lapses_at for t in fresh)
    source = origin.source
    if not source.startswith(f"{SOURCE_KIND}:"):
        source = f"{SOURCE_KIND}:{source}"
    request = request_optin(
        session,
        email=email,
        data={},
        topics=list(fresh),
        text=consent_text(fresh, language=language, sender=settings.mail_from_name),
        language=language,
        origin=Origin(source=source, ip=origin.ip, user_agent=origin.user_agent),
        now=now,
        settings=settings,
        repermission=True,
        mail_context={"lapse_date": lapse_date_text(lapses_at, language)},
        send_by=lapses_at,
    )
    if request is None:
        raise ConsentError(MSG_RATE_LIMITED, email=email)
    return request


def send_repermissions(
    session: Session,
    contact_ids: Sequence[int],
    *,
    now: datetime,
    settings: Settings,
    origin: Origin,
    within_days: int = DEFAULT_WITHIN_DAYS,
) -> Outcome:
    """The re-permission mail to each of ``contact_ids`` (the marketer's selection).

    Each contact is asked about its topics that lapse within ``within_days`` and were not
    asked about yet; each refusal keeps its reason. Each contact runs in a savepoint, so a
    refusal leaves nothing half-recorded and the others still go.
    """
    queued: list[ConsentRequest] = []
    refused: list[Refusal] = []
    months = settings.consent_dormancy_months
    horizon = now + timedelta(days=within_days)
    for contact_id in dict.fromkeys(contact_ids):
        contact = session.get(Contact, contact_id)
        if contact is None:
            refused.append(Refusal(contact_id, ConsentError(MSG_GONE, id=contact_id)))
            continue
        due = [
            s
            for s in standing(session, contact, settings=settings)
            if is_dormant(s.alive, horizon, months)
        ]
        valid = [s for s in due if not is_dormant(s.alive, now, months)]
        # With nothing left to ask, the asked or lapsed topics go in so the refusal names them.
        topics = (
            [s.topic for s in valid if s.asked_at is None]
            or [s.topic for s in valid]
            or [s.topic for s in due]
        )
        try:
            if not topics:
                if is_suppressed(session, secret=settings.suppression_secret, email=contact.email):
                    raise ConsentError(MSG_SUPPRESSED, email=contact.email)
                raise ConsentError(MSG_NOT_APPROACHING, email=contact.email, days=within_days)
            with session.begin_nested():
                request = send_repermission(
                    session, contact, topics=topics, now=now, settings=settings, origin=origin
                )
        except ConsentError as exc:
            refused.append(Refusal(contact_id, exc))
            continue
        queued.append(request)
    return Outcome(queued=tuple(queued), refused=tuple(refused))

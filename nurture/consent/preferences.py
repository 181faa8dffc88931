"""The preference centre: what a recipient may change about the mail they get, without login.

The centre can only take consent away, never give it: a topic that is on (confirmed, imported
with proof, or the existing-customer basis) can be switched off; a topic that is off cannot be
switched on here, because a lawful consent needs the double opt-in with its own evidence. The
page sends such a person to the signup form instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.consent.ledger import Origin, record
from nurture.consent.models import Consent, ConsentEntry, ConsentState, Topic, TopicKind
from nurture.consent.unsubscribe import lock_contact, withdrawal_for
from nurture.contacts.models import Contact
from nurture.contacts.store import update_contact
from nurture.errors import N_, UserFacingError
from nurture.events import record_event

# Mails per week a person may choose. Monthly is not offered: the gate counts a rolling week,
# and "one a month" would need a counter of its own.
FREQUENCIES: tuple[int, ...] = (1, 2)
# A pause is a pause, not a hidden unsubscribe: beyond this, unsubscribing is the honest choice.
MAX_PAUSE = timedelta(days=730)
# The contact fields the centre lets a person correct (issue 5: name, company and address).
OWN_DATA = ("first_name", "last_name", "company", "city")
SETTINGS = ("language", "formality")
EVENT_SOURCE = "preferences"


class PreferencesError(UserFacingError):
    """A change the preference centre does not allow; ``field`` names the input."""

    def __init__(self, field: str, message: str, **params: object) -> None:
        self.field = field
        super().__init__(message, **params)


@dataclass(frozen=True)
class TopicChoice:
    """One topic the contact has a state for, as the centre shows it."""

    slug: str
    name: str
    description: str
    kind: TopicKind
    state: ConsentState

    @property
    def on(self) -> bool:
        return self.state in (ConsentState.GRANTED, ConsentState.EXISTING_CUSTOMER)


def topic_choices(session: Session, contact_id: int) -> list[TopicChoice]:
    """The contact's topics, marketing before tracking, by name."""
    rows = session.execute(
        select(Topic, Consent.state)
        .join(Consent, Consent.topic_id == Topic.id)
        .where(Consent.contact_id == contact_id)
        .order_by(Topic.kind, Topic.name, Topic.id)
    )
    return [
        TopicChoice(
            slug=topic.slug,
            name=topic.name,
            description=topic.description,
            kind=topic.kind,
            state=state,
        )
        for topic, state in rows
    ]


@dataclass(frozen=True)
class Preferences:
    """Everything the centre's form holds."""

    topics_on: frozenset[str]  # slugs left switched on, marketing and tracking
    max_mails_per_week: int | None
    paused_until: date | None  # no mail before this day (UTC)
    language: str
    formality: str
    first_name: str
    last_name: str
    company: str
    city: str


def pause_day(contact: Contact, now: datetime) -> date | None:
    """The day a running pause ends; None when there is none (or it is over)."""
    if contact.paused_until is None or contact.paused_until <= now:
        return None
    return contact.paused_until.astimezone(UTC).date()


def current_preferences(session: Session, contact: Contact, *, now: datetime) -> Preferences:
    return Preferences(
        topics_on=frozenset(c.slug for c in topic_choices(session, contact.id) if c.on),
        max_mails_per_week=contact.max_mails_per_week,
        paused_until=pause_day(contact, now),
        language=contact.language,
        formality=contact.formality,
        first_name=contact.first_name,
        last_name=contact.last_name,
        company=contact.company,
        city=contact.city,
    )


@dataclass(frozen=True)
class Saved:
    fields: tuple[str, ...]  # contact fields changed
    withdrawn: tuple[str, ...]  # topic slugs switched off

    @property
    def changed(self) -> bool:
        return bool(self.fields) or bool(self.withdrawn)


def _check(
    contact: Contact, wanted: Preferences, choices: dict[str, TopicChoice], now: datetime
) -> None:
    for slug in sorted(wanted.topics_on):
        choice = choices.get(slug)
        if choice is None or not choice.on:
            raise PreferencesError(
                "topics",
                N_(
                    "“%(topic)s” cannot be switched on here. To receive it again, please sign "
                    "up through our signup form; you will get a mail to confirm."
                ),
                topic=choice.name if choice is not None else slug,
            )
    # A cap or pause left as it was passes, even when set by other means than this page.
    cap = wanted.max_mails_per_week
    if cap is not None and cap not in FREQUENCIES and cap != contact.max_mails_per_week:
        raise PreferencesError("frequency", N_("Choose one of the offered frequencies."))
    if wanted.paused_until is not None and wanted.paused_until != pause_day(contact, now):
        today = now.astimezone(UTC).date()
        if wanted.paused_until <= today:
            raise PreferencesError("paused_until", N_("The pause must end on a future day."))
        if wanted.paused_until > today + MAX_PAUSE:
            raise PreferencesError(
                "paused_until",
                N_("A pause can last at most two years. To stop all mail, unsubscribe instead."),
            )


def save_preferences(
    session: Session, contact: Contact, wanted: Preferences, *, origin: Origin, now: datetime
) -> Saved:
    """Apply the centre's form: switch topics off, set cap and pause, correct own data.

    Raises PreferencesError (switching a topic on, a pause in the past) or ContactDataError
    (invalid names) before anything is written; the caller rolls back on either.
    """
    lock_contact(session, contact)
    choices = {c.slug: c for c in topic_choices(session, contact.id)}
    _check(contact, wanted, choices, now)
    changed: list[str] = []
    data = {name: getattr(wanted, name) for name in (*OWN_DATA, *SETTINGS)}
    before = {name: getattr(contact, name) for name in data}
    update_contact(session, contact, data, now=now)
    changed += [name for name in data if getattr(contact, name) != before[name]]
    if contact.max_mails_per_week != wanted.max_mails_per_week:
        contact.max_mails_per_week = wanted.max_mails_per_week
        changed.append("max_mails_per_week")
    if pause_day(contact, now) != wanted.paused_until:
        contact.paused_until = (
            datetime.combine(wanted.paused_until, time(0), tzinfo=UTC)
            if wanted.paused_until is not None
            else None
        )
        changed.append("paused_until")
    if changed:
        contact.updated_at = now
        session.flush()
        # Field names only, never values: the timeline shows what changed, not the data.
        record_event(
            session,
            "contact_updated",
            now=now,
            contact_id=contact.id,
            payload={"fields": sorted(changed), "source": EVENT_SOURCE},
        )
    withdrawn = []
    for choice in choices.values():
        if choice.on and choice.slug not in wanted.topics_on:
            topic = session.scalar(select(Topic).where(Topic.slug == choice.slug))
            assert topic is not None
            record(
                session,
                contact_id=contact.id,
                topic=topic,
                action=withdrawal_for(choice.state),
                origin=origin,
                now=now,
            )
            withdrawn.append(choice.slug)
    return Saved(fields=tuple(sorted(changed)), withdrawn=tuple(withdrawn))


# -- the consent history -----------------------------------------------------------------------

# Ledger sources are "<kind>:<detail>"; a person sees the kind, not our internal detail.
SOURCE_KINDS = ("form", "api", "import", "user", "link", "merge", "repermission")


@dataclass(frozen=True)
class HistoryRow:
    topic: str
    action: str
    at: datetime
    source_kind: str  # one of SOURCE_KINDS or "other"


def source_kind(source: str) -> str:
    kind = source.split(":", 1)[0].strip().lower()
    return kind if kind in SOURCE_KINDS else "other"


def consent_history(session: Session, contact_id: int) -> list[HistoryRow]:
    """The contact's ledger, newest first, as the person may see it."""
    rows = session.execute(
        select(ConsentEntry, Topic.name)
        .join(Topic, Topic.id == ConsentEntry.topic_id)
        .where(ConsentEntry.contact_id == contact_id)
        .order_by(ConsentEntry.at.desc(), ConsentEntry.id.desc())
    )
    return [
        HistoryRow(
            topic=name,
            action=entry.action.value,
            at=entry.at,
            source_kind=source_kind(entry.source),
        )
        for entry, name in rows
    ]

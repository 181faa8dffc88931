"""Rows for tests, made through the same services the product uses."""

from __future__ import annotations

from itertools import count

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.auth.users import create_user
from nurture.clock import FrozenClock
from nurture.consent.ledger import Origin, record
from nurture.consent.models import Action, Topic, TopicKind
from nurture.contacts.models import Contact
from nurture.contacts.store import upsert_contact

PASSWORD = "correct horse battery staple"
_seq = count(1)


def make_user(
    session: Session,
    clock: FrozenClock,
    *,
    role: Role = Role.MARKETER,
    email: str | None = None,
    password: str = PASSWORD,
    commit: bool = True,
) -> User:
    user = create_user(
        session,
        email=email or f"user{next(_seq)}@nurture.example",
        role=role,
        password=password,
        now=clock.now(),
        name="Test User",
    )
    if commit:
        session.commit()
    return user


def make_contact(session: Session, clock: FrozenClock, **fields: object) -> Contact:
    """A contact through the real upsert (normalisation, events)."""
    data = {"email": f"kunde{next(_seq)}@kunde.example", **fields}
    contact, _created = upsert_contact(session, data, now=clock.now(), source="test")
    session.flush()
    return contact


def make_topic(session: Session, clock: FrozenClock, slug: str = "news", **fields: object) -> Topic:
    """The topic with ``slug``, created on first use."""
    topic = session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        topic = Topic(
            slug=slug,
            name=str(fields.pop("name", slug.title())),
            kind=fields.pop("kind", TopicKind.MARKETING),
            created_at=clock.now(),
            **fields,
        )
        session.add(topic)
        session.flush()
    return topic


def grant_consent(
    session: Session, clock: FrozenClock, contact: Contact, slug: str = "news"
) -> Topic:
    """A confirmed consent for ``slug`` through the real ledger."""
    topic = make_topic(session, clock, slug)
    record(
        session,
        contact_id=contact.id,
        topic=topic,
        action=Action.CONFIRMED,
        origin=Origin(source="test", ip="192.0.2.1", user_agent="pytest"),
        now=clock.now(),
    )
    return topic


def make_subscriber(session: Session, clock: FrozenClock, slug: str = "news", **fields: object):  # type: ignore[no-untyped-def]
    """A contact with a confirmed consent for ``slug``: marketing mail may go to them."""
    contact = make_contact(session, clock, **fields)
    grant_consent(session, clock, contact, slug)
    return contact

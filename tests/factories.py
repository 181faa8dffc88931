"""Rows for tests, made through the same services the product uses."""

from __future__ import annotations

from itertools import count

from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.auth.users import create_user
from nurture.clock import FrozenClock
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

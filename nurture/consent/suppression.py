"""The suppression list: addresses never to mail again, kept only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nurture.consent.models import Suppression, SuppressionReason
from nurture.contacts.fields import normalise_email
from nurture.contacts.models import Contact
from nurture.contacts.store import find_by_email
from nurture.errors import N_, UserFacingError

SUPPRESSED_MESSAGE = N_(
    "This address is on the suppression list (unsubscribed, bounced or erased) and cannot be "
    "added again."
)


class SuppressedAddress(UserFacingError):
    """A new contact with an address on the suppression list was refused."""

    def __init__(self) -> None:
        super().__init__(SUPPRESSED_MESSAGE)


def address_hash(secret: str, email: str) -> str:
    """HMAC-SHA256 of the normalised address: the same person whatever the spelling."""
    try:
        normal = normalise_email(email)
    except ValueError:
        normal = email.strip().lower()
    return hmac.new(secret.encode(), normal.encode(), hashlib.sha256).hexdigest()


def suppress(
    session: Session, *, secret: str, email: str, reason: SuppressionReason, now: datetime
) -> bool:
    """Put the address on the list (once; the first reason stays); True if it was new."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(Suppression)
        .values(address_hash=address_hash(secret, email), reason=reason, created_at=now)
        .on_conflict_do_nothing(index_elements=["address_hash"])
        .returning(Suppression.id)
    )
    return session.scalar(stmt) is not None


def suppression_of(session: Session, *, secret: str, email: str) -> Suppression | None:
    digest = address_hash(secret, email)
    return session.scalar(select(Suppression).where(Suppression.address_hash == digest))


def is_suppressed(session: Session, *, secret: str, email: str) -> bool:
    return suppression_of(session, secret=secret, email=email) is not None


def suppressed_hashes(session: Session, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` are on the list: one query for a whole import batch."""
    wanted = list(set(hashes))
    if not wanted:
        return set()
    return set(
        session.scalars(
            select(Suppression.address_hash).where(Suppression.address_hash.in_(wanted))
        )
    )


def refuse_new_suppressed(
    session: Session, *, secret: str, email: str, customer_number: str | None = None
) -> None:
    """SuppressedAddress when ``email`` is suppressed and writing it would create a contact.

    A contact that is still there (unsubscribed, say) keeps being updatable: the send gate keeps
    mail from it, and refusing its updates would only break the sync of a CRM or ERP.
    """
    if not is_suppressed(session, secret=secret, email=email):
        return
    if find_by_email(session, email) is not None:
        return
    if customer_number and session.scalar(
        select(Contact.id).where(Contact.customer_number == customer_number)
    ):
        return
    raise SuppressedAddress()

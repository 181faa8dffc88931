"""The existing-customer exception of §7(3) UWG, recorded like consent with its evidence.

A seller may mail a customer about its own similar products without consent when it got the
address in connection with a sale, the customer did not object, and the customer was told at
collection and in every mail that they may object at any time. nurture records the sale and the
notice given then; the layout of every marketing mail carries the objection notice; an objection
ends the basis for good (the ledger refuses it afterwards).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from nurture.consent.ledger import ConsentError, Origin, record, text_version
from nurture.consent.models import Action, ConsentEntry, Topic, TopicKind
from nurture.contacts.models import Contact
from nurture.errors import N_

MAX_SALE_REFERENCE = 200


def record_existing_customer(
    session: Session,
    contact: Contact,
    topic: Topic,
    *,
    sale_reference: str,
    notice_text: str,
    origin: Origin,
    now: datetime,
) -> ConsentEntry:
    """Record the §7(3) UWG basis for ``topic``: the sale and the objection notice given then.

    ConsentError for a topic not flagged "own similar products", without a sale or notice, or
    after the contact objected.
    """
    if topic.kind is not TopicKind.MARKETING or not topic.own_similar_products:
        raise ConsentError(
            N_(
                "The existing-customer exception covers only topics about the sender's own "
                "similar products."
            )
        )
    sale_reference = sale_reference.strip()
    if not sale_reference:
        raise ConsentError(N_("Name the sale at which the address was collected."))
    if len(sale_reference) > MAX_SALE_REFERENCE:
        raise ConsentError(
            N_("The sale reference is longer than %(max)d characters."), max=MAX_SALE_REFERENCE
        )
    if not notice_text.strip():
        raise ConsentError(N_("The notice of the right to object given at the sale is required."))
    notice = text_version(session, notice_text, language=contact.language or "de", now=now)
    return record(
        session,
        contact_id=contact.id,
        topic=topic,
        action=Action.EXISTING_CUSTOMER,
        origin=origin,
        now=now,
        text=notice,
        evidence={"sale": sale_reference, "notice": notice.sha256},
    )


def record_objection(
    session: Session, contact: Contact, topic: Topic, *, origin: Origin, now: datetime
) -> ConsentEntry:
    """The contact objected to advertising on ``topic``: the existing-customer basis ends for
    good, and a consent for the topic with it (an objection outranks every earlier yes)."""
    return record(
        session, contact_id=contact.id, topic=topic, action=Action.OBJECTED, origin=origin, now=now
    )

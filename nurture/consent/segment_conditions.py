"""The segment condition "consent for topic T": who has which basis to be mailed about a topic.

Definition::

    {"consent": "<topic slug>", "op": "confirmed"}

======================= =====================================================================
op                      matches contacts whose current state for the topic is …
======================= =====================================================================
``confirmed``           granted: confirmed, re-confirmed or imported with proof
``existing_customer``   the existing-customer exception of §7(3) UWG (recorded, not objected)
``any_basis``           a basis the send gate accepts: granted, or existing customer for a
                        topic about the sender's own similar products
``none``                no such basis: never asked, pending, withdrawn, expired, objected, or
                        existing customer for a topic the exception does not cover
``pending``             a double-opt-in request waiting for its confirmation
======================= =====================================================================

The condition reads ``consents`` (the current state the ledger keeps in step) through a
correlated ``EXISTS`` joined to ``topics`` by slug; the slug is a bound value, and both slug and
op must pass the allow-list first. With a session (every service has one) an unknown slug is
refused by name; without one only its form is checked, which is enough because topics are never
deleted and their slugs never change.

There is no ``mailable`` op on purpose. The gate also refuses suppressed addresses, and the
suppression list holds only an HMAC of each address under a secret, which SQL cannot compute;
dormancy, pauses and weekly caps depend on settings and counts outside a segment. A condition
named "mailable" that let suppressed people through would promise what only the gate decides.
``any_basis`` says exactly what SQL can know: an unsubscribe withdraws every consent, so those
people already fall out of it, and the gate stops the rest right before each send.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from nurture.consent.models import Consent, ConsentState, Topic
from nurture.consent.topics import SLUG_RE
from nurture.contacts.models import Contact
from nurture.contacts.segments import (
    BuilderOffer,
    CompileContext,
    ConditionInvalid,
    Message,
    ValidationContext,
    register_condition,
)
from nurture.errors import N_

KIND = "consent"
OPS = ("confirmed", "existing_customer", "any_basis", "none", "pending")
# The state each op is about; any_basis and none combine states with the topic (see _basis).
_STATE_OF = {
    "confirmed": ConsentState.GRANTED,
    "existing_customer": ConsentState.EXISTING_CUSTOMER,
    "pending": ConsentState.PENDING,
}
OP_LABELS = (
    ("confirmed", N_("confirmed")),
    ("existing_customer", N_("existing customer")),
    ("any_basis", N_("any valid basis")),
    ("none", N_("no valid basis")),
    ("pending", N_("pending confirmation")),
)
MAX_KEY = 200


def known_slugs(session: Session) -> list[str]:
    return list(session.scalars(select(Topic.slug).order_by(Topic.slug)))


def _slug_problem(slug: Any, session: Session | None) -> Message | None:
    if session is None:
        if isinstance(slug, str) and SLUG_RE.fullmatch(slug):
            return None
        return Message(N_("is not a known topic"))
    known = known_slugs(session)
    if isinstance(slug, str) and slug in known:
        return None
    if not known:
        return Message(N_("is not a known topic; there are no topics yet"))
    return Message(
        N_("is not a known topic; use one of %(choices)s"), {"choices": ", ".join(known)}
    )


def validate_consent(condition: dict[str, Any], ctx: ValidationContext) -> dict[str, Any]:
    """The normalised condition, or ConditionInvalid naming each bad key."""
    errors = {
        str(key)[:MAX_KEY]: Message(N_("is not allowed here"))
        for key in condition
        if key not in (KIND, "op")
    }
    slug = condition[KIND]
    problem = _slug_problem(slug, ctx.session)
    if problem is not None:
        errors[KIND] = problem
    op = condition.get("op")
    if not isinstance(op, str) or op not in OPS:
        errors["op"] = Message(N_("must be one of %(choices)s"), {"choices": ", ".join(OPS)})
    if errors:
        raise ConditionInvalid(errors)
    return {KIND: slug, "op": op}


def _basis() -> ColumnElement[bool]:
    """The gate's rule (nurture.consent.gate.decide) over the joined consent and topic rows."""
    return and_(
        Consent.granted_at.is_not(None),
        or_(
            Consent.state == ConsentState.GRANTED,
            and_(
                Consent.state == ConsentState.EXISTING_CUSTOMER,
                Topic.own_similar_products.is_(True),
            ),
        ),
    )


def compile_consent(condition: dict[str, Any], _ctx: CompileContext) -> ColumnElement[bool]:
    op = condition["op"]
    # Correlated on contacts.id: one look-up in the consents primary key per contact.
    where = [
        Consent.contact_id == Contact.id,
        Consent.topic_id == Topic.id,
        Topic.slug == condition[KIND],
    ]
    where.append(Consent.state == _STATE_OF[op] if op in _STATE_OF else _basis())
    found = exists().where(*where)
    return ~found if op == "none" else found


def topic_subjects(session: Session) -> list[tuple[str, str]]:
    """(slug, name) of every topic, for the builder's "Consent" group."""
    rows = list(session.execute(select(Topic.slug, Topic.name).order_by(Topic.name, Topic.slug)))
    names = [row.name for row in rows]
    # Names need not be unique; the slug tells two topics of the same name apart.
    return [
        (row.slug, row.name if names.count(row.name) == 1 else f"{row.name} ({row.slug})")
        for row in rows
    ]


OFFER = BuilderOffer(
    heading=N_("Consent"),
    ops=OP_LABELS,
    subjects=topic_subjects,
    help=N_(
        "A valid basis is a confirmed consent, or for a topic about your own similar products "
        "the existing-customer exception (§7(3) UWG): what the send gate checks. Suppressed "
        "addresses, dormant consents and paused contacts are not left out here; the send gate "
        "still stops their mail."
    ),
)

register_condition(KIND, validate_consent, compile_consent, offer=OFFER)

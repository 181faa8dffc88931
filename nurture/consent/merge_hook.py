"""What a merge of two contacts does to their consent: the stricter answer wins, nothing widens.

Registered with the contacts merge when this module is imported (nurture.consent.ui imports it,
and every process that serves merges builds the app, which imports that).

Which state is stricter follows OBJECTED/NONE (withdrawn) < PENDING < EXISTING_CUSTOMER <
GRANTED. Only a refusal moves the survivor, because only a refusal is something the person
said: the merged contact's objection, or its withdrawal (NONE after a ``withdrawn`` entry),
is recorded on the survivor through the ledger when the survivor's own state is wider. A merged
contact that merely never confirmed (NONE after an expired request, or PENDING) or has a
narrower basis (EXISTING_CUSTOMER against GRANTED) expressed no refusal, and the ledger has no
action that would narrow a consent without one, so the survivor's state stays. The reverse
never widens anything: a consent of the merged contact does not carry over to a survivor that
withdrew or objected.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nurture.consent.ledger import Origin, record, states
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentState,
    Topic,
)
from nurture.contacts.merge import register_merge_hook
from nurture.contacts.models import Contact

RANK = {
    ConsentState.OBJECTED: 0,
    ConsentState.NONE: 0,
    ConsentState.PENDING: 1,
    ConsentState.EXISTING_CUSTOMER: 2,
    ConsentState.GRANTED: 3,
}


def _refusals(session: Session, contact_id: int) -> dict[int, Action]:
    """Per topic id, the refusal that stands for the contact: objected or withdrawn."""
    current = states(session, contact_id)
    withdrawn_topics = set(
        session.scalars(
            select(ConsentEntry.topic_id)
            .where(ConsentEntry.contact_id == contact_id, ConsentEntry.action == Action.WITHDRAWN)
            .distinct()
        )
    )
    refusals: dict[int, Action] = {}
    for topic_id, row in current.items():
        if row.state is ConsentState.OBJECTED:
            refusals[topic_id] = Action.OBJECTED
        # NONE with a withdrawal on record: nothing granted since (a grant would have moved
        # the state, and only another withdrawal moves a grant back to NONE).
        elif row.state is ConsentState.NONE and topic_id in withdrawn_topics:
            refusals[topic_id] = Action.WITHDRAWN
    return refusals


@register_merge_hook
def keep_stricter_consent(session: Session, keep: Contact, merge: Contact, now: datetime) -> None:
    kept = states(session, keep.id)
    for topic_id, refusal in sorted(_refusals(session, merge.id).items()):
        row = kept.get(topic_id)
        kept_state = row.state if row is not None else ConsentState.NONE
        merged_state = ConsentState.OBJECTED if refusal is Action.OBJECTED else ConsentState.NONE
        wider = RANK[kept_state] > RANK[merged_state]
        # An objection also outranks a plain NONE: it ends the existing-customer basis for good.
        if wider or (refusal is Action.OBJECTED and kept_state is not ConsentState.OBJECTED):
            topic = session.get(Topic, topic_id)
            assert topic is not None
            record(
                session,
                contact_id=keep.id,
                topic=topic,
                action=refusal,
                origin=Origin(source=f"merge:{merge.id}"),
                now=now,
                evidence={
                    "merged_contact_id": merge.id,
                    "merged_state": merged_state.value,
                    "kept_state": kept_state.value,
                },
            )

    # The history moves with the person: every ledger entry and pending request of the merged
    # contact now belongs to the survivor, unchanged, so the proof keeps showing who agreed to
    # what and when. One bulk UPDATE, the sanctioned exception to the append-only ledger (its
    # guard watches ORM changes), like the events the merge moves.
    session.execute(
        update(ConsentEntry)
        .where(ConsentEntry.contact_id == merge.id)
        .values(contact_id=keep.id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ConsentRequest)
        .where(ConsentRequest.contact_id == merge.id)
        .values(contact_id=keep.id)
        .execution_options(synchronize_session=False)
    )
    # The merged contact's current states are superseded by the survivor's (decided above).
    session.execute(
        delete(Consent)
        .where(Consent.contact_id == merge.id)
        .execution_options(synchronize_session=False)
    )
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Consent) and obj.contact_id == merge.id:
            session.expunge(obj)
        elif isinstance(obj, ConsentEntry | ConsentRequest) and obj.contact_id == merge.id:
            session.expire(obj, ["contact_id"])
    session.flush()

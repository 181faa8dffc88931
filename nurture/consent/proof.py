"""The consent evidence of one contact, as the proof page, the API and the export show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.consent.ledger import history, states
from nurture.consent.models import ConsentEntry, ConsentState, ConsentText, Suppression, Topic
from nurture.consent.suppression import suppression_of
from nurture.consent.topics import list_topics, topics_by_id
from nurture.contacts.models import Contact


@dataclass(frozen=True)
class TopicState:
    """A contact's current state for one topic; NONE where nothing was ever recorded."""

    topic: Topic
    state: ConsentState
    since: datetime | None
    granted_at: datetime | None


@dataclass(frozen=True)
class ProofEntry:
    entry: ConsentEntry
    topic: Topic
    text: ConsentText | None


@dataclass(frozen=True)
class Proof:
    contact: Contact
    entries: list[ProofEntry]
    # Each wording once, in the order the ledger first used it.
    texts: list[ConsentText]
    states: list[TopicState]
    suppression: Suppression | None


def current_states(session: Session, contact_id: int) -> list[TopicState]:
    """Every topic with the contact's current state, marketing topics first."""
    rows = states(session, contact_id)
    result = []
    for topic in list_topics(session):
        row = rows.get(topic.id)
        result.append(
            TopicState(
                topic=topic,
                state=row.state if row is not None else ConsentState.NONE,
                since=row.changed_at if row is not None else None,
                granted_at=row.granted_at if row is not None else None,
            )
        )
    return result


def _texts(session: Session, entries: list[ConsentEntry]) -> dict[int, ConsentText]:
    ids = {entry.text_id for entry in entries if entry.text_id is not None}
    if not ids:
        return {}
    rows = session.scalars(select(ConsentText).where(ConsentText.id.in_(ids)))
    return {text.id: text for text in rows}


def proof_entries(session: Session, contact_id: int) -> list[ProofEntry]:
    """The contact's ledger, oldest first, with each entry's topic and the exact text shown."""
    entries = history(session, contact_id)
    topics = topics_by_id(session)
    texts = _texts(session, entries)
    return [
        ProofEntry(
            entry=entry,
            topic=topics[entry.topic_id],
            text=texts.get(entry.text_id) if entry.text_id is not None else None,
        )
        for entry in entries
    ]


def proof_of(session: Session, contact: Contact, *, secret: str) -> Proof:
    entries = proof_entries(session, contact.id)
    texts: dict[int, ConsentText] = {}
    for item in entries:
        if item.text is not None:
            texts.setdefault(item.text.id, item.text)
    return Proof(
        contact=contact,
        entries=entries,
        texts=list(texts.values()),
        states=current_states(session, contact.id),
        suppression=suppression_of(session, secret=secret, email=contact.email),
    )


def utc_seconds(moment: datetime) -> str:
    """ISO 8601 in UTC to the second: what the ledger promises and the proof prints."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def entry_json(item: ProofEntry, *, with_text: bool = False) -> dict[str, Any]:
    entry = item.entry
    body: dict[str, Any] = {
        "id": entry.id,
        "topic": item.topic.slug,
        "action": entry.action.value,
        "at": utc_seconds(entry.at),
        "source": entry.source,
        "ip": entry.ip,
        "user_agent": entry.user_agent,
        "text_hash": entry.text_hash,
        "request_id": entry.request_id,
        "mail_message_id": entry.mail_message_id,
        "evidence": entry.evidence or {},
    }
    if with_text:
        body["text"] = (
            {"language": item.text.language, "text": item.text.text}
            if item.text is not None
            else None
        )
    return body


def states_json(topic_states: list[TopicState]) -> dict[str, dict[str, Any]]:
    """Per topic slug: the state and since when; topics never touched are left out."""
    return {
        ts.topic.slug: {
            "state": ts.state.value,
            "since": utc_seconds(ts.since) if ts.since else None,
            "granted_at": utc_seconds(ts.granted_at) if ts.granted_at else None,
        }
        for ts in topic_states
        if ts.since is not None
    }

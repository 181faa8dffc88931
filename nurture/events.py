"""The append-only events log: every fact about a contact's behaviour is one row here.

Timeline, branch conditions, scores, KPIs and handover all read this table; nothing writes
behaviour anywhere else. Rows are never updated; they are deleted only by erasure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from nurture.db import Base, BigId, UtcDateTime

JsonPayload = JSON().with_variant(JSONB(), "postgresql")


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # SET NULL: erasure removes the person but keeps anonymous counts.
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True
    )
    message_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JsonPayload, default=dict)
    # Inbound things (webhooks, tracking hits, polled mail) carry a key so processing twice
    # changes nothing. NULL for facts that cannot repeat.
    dedup_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)

    __table_args__ = (
        Index("ix_events_contact_id_occurred_at", "contact_id", "occurred_at"),
        # Behaviour conditions of segments and branches: "an order in the last 180 days".
        Index("ix_events_contact_id_type_occurred_at", "contact_id", "type", "occurred_at"),
        Index("ix_events_message_id", "message_id"),
        Index("ix_events_type_occurred_at", "type", "occurred_at"),
    )

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.type} contact={self.contact_id} at={self.occurred_at}>"


class AppendOnlyError(RuntimeError):
    """Raised when code tries to change or delete a recorded event."""


@event.listens_for(Session, "before_flush")
def _refuse_event_changes(session: Session, _context: Any, _instances: Any) -> None:
    # Erasure deletes with a bulk statement on purpose; the ORM path is for recording only.
    for obj in session.dirty:
        if isinstance(obj, Event) and session.is_modified(obj):
            raise AppendOnlyError(f"events are append-only; refusing to update {obj!r}")
    for obj in session.deleted:
        if isinstance(obj, Event):
            raise AppendOnlyError(f"events are append-only; refusing to delete {obj!r}")


def record_event(
    session: Session,
    type: str,
    *,
    now: datetime,
    occurred_at: datetime | None = None,
    contact_id: int | None = None,
    message_id: int | None = None,
    payload: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> Event | None:
    """Append one event; with a ``dedup_key`` seen before, record nothing and return None."""
    values = {
        "type": type,
        "contact_id": contact_id,
        "message_id": message_id,
        "occurred_at": occurred_at or now,
        "recorded_at": now,
        "payload": payload or {},
        "dedup_key": dedup_key,
    }
    if dedup_key is None:
        row = Event(**values)
        session.add(row)
        session.flush()
        return row
    # INSERT .. ON CONFLICT DO NOTHING is atomic under concurrency, unlike select-then-insert.
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(Event)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(Event.id)
    )
    new_id = session.scalar(stmt)
    if new_id is None:
        return None
    return session.get(Event, new_id)


_APPEND = Event.__table__.insert()


def append_events(session: Session, events: list[dict[str, Any]], *, now: datetime) -> None:
    """Append events that cannot repeat (no dedup key) in one statement, without ORM objects."""
    rows = [
        {
            "type": e["type"],
            "contact_id": e.get("contact_id"),
            "message_id": e.get("message_id"),
            "occurred_at": e.get("occurred_at") or now,
            "recorded_at": now,
            "payload": e.get("payload") or {},
            "dedup_key": None,
        }
        for e in events
    ]
    session.connection().execute(_APPEND, rows)

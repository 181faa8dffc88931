"""Read-side queries of the contact pages: the filtered, sorted, keyset-paged list, counts,
and the timeline as the contact page shows it."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import ColumnElement, exists, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from nurture.auth.models import User
from nurture.contacts.activity import timeline
from nurture.contacts.custom_fields import definitions
from nurture.contacts.models import Contact, Lifecycle, Segment
from nurture.contacts.store import search_condition
from nurture.errors import N_, UserFacingError
from nurture.events import Event
from nurture.mail.models import Message

PAGE_SIZE = 50
# The largest BIGINT: a larger id from a URL would make PostgreSQL refuse the query (a 500).
MAX_ID = 2**63 - 1
COUNT_CAP = 1000

# -- the list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """One order of the list; ``key`` is None for the id alone."""

    key: Callable[[], ColumnElement[Any]] | None
    descending: bool
    kind: Literal["id", "text", "time"]


SORTS: dict[str, Sort] = {
    "newest": Sort(None, True, "id"),
    "oldest": Sort(None, False, "id"),
    # lower(): the order a person expects ("de Vries" among the Ds), and the key comes from the
    # database, so SQLite's ASCII-only lower() and Python's never disagree about a cursor.
    "last_name": Sort(lambda: func.lower(Contact.last_name), False, "text"),
    "company": Sort(lambda: func.lower(Contact.company), False, "text"),
    "updated": Sort(lambda: Contact.updated_at, True, "time"),
}
DEFAULT_SORT = "newest"


@dataclass(frozen=True)
class ContactFilter:
    """What the list is narrowed to; empty values mean "any"."""

    search: str = ""
    lifecycle: Lifecycle | None = None
    # A user id, "none" for contacts without an owner, or None for any owner.
    owner: int | Literal["none"] | None = None
    tag: str = ""
    segment_id: int | None = None

    @property
    def active(self) -> bool:
        return bool(
            self.search
            or self.lifecycle
            or self.owner is not None
            or self.tag
            or self.segment_id is not None
        )


@dataclass(frozen=True)
class ContactPage:
    rows: list[Contact]
    # Opaque cursors for the neighbouring pages; None where there is none.
    next_cursor: str | None
    prev_cursor: str | None


class SegmentUnavailable(UserFacingError):
    """The segment a filter names cannot be applied."""


def tag_condition(session: Session, tag: str) -> ColumnElement[bool]:
    """Contacts whose tag list holds ``tag`` (tags are stored lower-cased)."""
    tag = " ".join(tag.split()).lower()
    if session.get_bind().dialect.name == "postgresql":
        return Contact.tags.cast(JSONB).contains([tag])
    items = func.json_each(Contact.tags).table_valued("value")
    return exists().select_from(items).where(items.c.value == tag)


def segment_condition(session: Session, segment_id: int, *, now: datetime) -> ColumnElement[bool]:
    """The saved segment's condition; SegmentUnavailable if it cannot be applied."""
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise SegmentUnavailable(N_("The segment no longer exists."))
    from nurture.contacts.segments import compile_definition

    try:
        return compile_definition(
            segment.definition, now=now, custom_fields=definitions(session), session=session
        )
    except ValueError:
        raise SegmentUnavailable(
            N_("The segment %(name)s cannot be applied; open it to see why."), name=segment.name
        ) from None


def filter_conditions(
    session: Session, filters: ContactFilter, *, now: datetime
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``filters``; raises SegmentUnavailable for a broken segment."""
    conditions: list[ColumnElement[bool]] = []
    search = search_condition(filters.search)
    if search is not None:
        conditions.append(search)
    if filters.lifecycle is not None:
        conditions.append(Contact.lifecycle == filters.lifecycle)
    if filters.owner == "none":
        conditions.append(Contact.owner_id.is_(None))
    elif filters.owner is not None:
        conditions.append(Contact.owner_id == filters.owner)
    if filters.tag.strip():
        conditions.append(tag_condition(session, filters.tag))
    if filters.segment_id is not None:
        conditions.append(segment_condition(session, filters.segment_id, now=now))
    return conditions


def encode_cursor(sort: str, key: Any, contact_id: int) -> str:
    if isinstance(key, datetime):
        key = key.isoformat()
    raw = json.dumps([sort, key, contact_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(sort: str, cursor: str | None) -> tuple[Any, int] | None:
    """(sort key, id) of a cursor made for ``sort``; None for anything else (tampered, stale)."""
    if not cursor or len(cursor) > 2000:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, key, contact_id = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        return None
    spec = SORTS.get(sort)
    if name != sort or spec is None:
        return None
    if not isinstance(contact_id, int) or isinstance(contact_id, bool):
        return None
    if not 0 < contact_id <= MAX_ID:
        return None
    if spec.kind == "id":
        return (None, contact_id) if key is None else None
    if not isinstance(key, str):
        return None
    if spec.kind == "time":
        try:
            moment = datetime.fromisoformat(key)
        except ValueError:
            return None
        return (moment, contact_id) if moment.tzinfo is not None else None
    return key, contact_id


def _beyond(spec: Sort, anchor: tuple[Any, int], *, forward: bool) -> ColumnElement[bool]:
    """Rows after the anchor in display order (forward) or before it (backward)."""
    key, contact_id = anchor
    greater = spec.descending != forward
    if spec.key is None:
        return Contact.id > contact_id if greater else Contact.id < contact_id
    # A row value comparison: one index range on PostgreSQL, supported by SQLite ≥ 3.15.
    left = tuple_(spec.key(), Contact.id)
    right = tuple_(literal(key, spec.key().type), literal(contact_id, Contact.id.type))
    return left > right if greater else left < right


def _order(spec: Sort, *, forward: bool) -> list[ColumnElement[Any]]:
    descending = spec.descending == forward
    columns: list[ColumnElement[Any]] = [] if spec.key is None else [spec.key()]
    columns.append(Contact.id)
    return [c.desc() if descending else c.asc() for c in columns]


def _fetch(
    session: Session,
    conditions: list[ColumnElement[bool]],
    spec: Sort,
    anchor: tuple[Any, int] | None,
    *,
    forward: bool,
    limit: int,
) -> list[tuple[Contact, Any]]:
    key = spec.key() if spec.key is not None else literal(None)
    stmt = select(Contact, key).where(*conditions).order_by(*_order(spec, forward=forward))
    if anchor is not None:
        stmt = stmt.where(_beyond(spec, anchor, forward=forward))
    return [(row[0], row[1]) for row in session.execute(stmt.limit(limit))]


def list_page(
    session: Session,
    filters: ContactFilter,
    *,
    now: datetime,
    sort: str = DEFAULT_SORT,
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> ContactPage:
    """One page of matching contacts in ``sort`` order, keyset-paged (no OFFSET).

    ``after`` continues after a page's last row, ``before`` goes back from a page's first row.
    A cursor that does not decode for this sort gives the first page.
    """
    spec = SORTS.get(sort, SORTS[DEFAULT_SORT])
    sort = sort if sort in SORTS else DEFAULT_SORT
    conditions = filter_conditions(session, filters, now=now)

    def cursor(row: tuple[Contact, Any]) -> str:
        return encode_cursor(sort, row[1], row[0].id)

    back = decode_cursor(sort, before) if before else None
    if back is not None:
        fetched = _fetch(session, conditions, spec, back, forward=False, limit=limit + 1)
        # Back at the start: show the real first page rather than a short one.
        if len(fetched) > limit:
            rows = list(reversed(fetched[:limit]))
            return ContactPage([r[0] for r in rows], cursor(rows[-1]), cursor(rows[0]))
    anchor = decode_cursor(sort, after) if after and back is None else None
    fetched = _fetch(session, conditions, spec, anchor, forward=True, limit=limit + 1)
    rows = fetched[:limit]
    return ContactPage(
        [r[0] for r in rows],
        cursor(rows[-1]) if len(fetched) > limit else None,
        cursor(rows[0]) if anchor is not None and rows else None,
    )


def count_matching(
    session: Session, filters: ContactFilter, *, now: datetime, cap: int = COUNT_CAP
) -> int:
    """How many contacts match, counted to ``cap + 1`` at most (more means "cap+").

    A full COUNT at a million rows reads the whole table; the LIMIT stops after cap + 1 rows.
    """
    inner = (
        select(literal(1).label("one"))
        .select_from(Contact)
        .where(*filter_conditions(session, filters, now=now))
        .limit(cap + 1)
        .subquery()
    )
    return session.scalar(select(func.count()).select_from(inner)) or 0


def all_users(session: Session) -> list[User]:
    """Every user, for owner selects and names; a team has few, so no paging."""
    return list(session.scalars(select(User).order_by(func.lower(User.email))))


def parse_id(raw: str | None) -> int | None:
    """A database id from a URL parameter; None for anything that cannot be one."""
    if not raw or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def all_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.name)))


# -- the timeline ----------------------------------------------------------------------------

# Category → event types; "all" (no filter) shows every type, also ones added later.
TIMELINE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mails": (
        "queued",
        "sent",
        "send_deferred",
        "send_failed",
        "send_uncertain",
        "send_skipped",
        "resend_requested",
        "send_dropped",
        "bounced",
        "opened",
        "clicked",
        "replied",
    ),
    "orders": ("order", "expected_revenue"),
    "complaints": ("complaint", "cancellation"),
    "conversations": ("call", "meeting", "note"),
    "changes": ("contact_created", "contact_updated", "contact_merged"),
}

CATEGORY_OF = {kind: name for name, kinds in TIMELINE_CATEGORIES.items() for kind in kinds}


@dataclass(frozen=True)
class TimelineEntry:
    """An event with what the page needs to say it in words."""

    event: Event
    # The mail's subject for mail events (from the outbox row, else the payload).
    subject: str | None
    # Money of orders and expected revenue, parsed for locale formatting.
    amount: Decimal | None
    # The timeline category of the type; None for a type the page has no words for.
    category: str | None


@dataclass(frozen=True)
class TimelinePage:
    entries: list[TimelineEntry]
    older: int | None  # the before_id of the next older page


def _amount(payload: dict[str, Any]) -> Decimal | None:
    if "amount" not in payload:
        return None
    try:
        amount = Decimal(str(payload["amount"]))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def timeline_page(
    session: Session,
    contact_id: int,
    *,
    category: str | None = None,
    before_id: int | None = None,
    limit: int = PAGE_SIZE,
) -> TimelinePage:
    """The contact's events newest first, of one category (None: all), keyset-paged."""
    types = list(TIMELINE_CATEGORIES[category]) if category in TIMELINE_CATEGORIES else None
    events = timeline(session, contact_id, types=types, before_id=before_id, limit=limit + 1)
    older = events[limit - 1].id if len(events) > limit else None
    events = events[:limit]
    message_ids = {e.message_id for e in events if e.message_id is not None}
    subjects: dict[int, str | None] = {}
    if message_ids:
        rows = session.execute(
            select(Message.id, Message.subject).where(Message.id.in_(message_ids))
        )
        subjects = {message_id: subject for message_id, subject in rows}
    entries = []
    for event in events:
        payload = event.payload or {}
        subject = subjects.get(event.message_id) if event.message_id is not None else None
        if not subject and isinstance(payload.get("subject"), str):
            subject = payload["subject"]
        entries.append(
            TimelineEntry(event, subject or None, _amount(payload), CATEGORY_OF.get(event.type))
        )
    return TimelinePage(entries, older)

"""Merging two contacts into one: the history of both stays, nothing is silently lost."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, inspect, or_, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from nurture.auth.models import User
from nurture.contacts.models import Contact, DuplicateDismissal
from nurture.errors import N_, UserFacingError
from nurture.events import Event, record_event
from nurture.mail.models import Message

# Every field a marketer can choose between, in the order the comparison page shows them.
# Tags and custom values are unions; ids and timestamps belong to the row, not the person.
MERGE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "title",
    "gender",
    "formality",
    "language",
    "birthday",
    "company",
    "industry",
    "company_size",
    "city",
    "country",
    "time_zone",
    "phone",
    "mobile",
    "website",
    "linkedin",
    "xing",
    "customer_number",
    "lifecycle",
    "owner_id",
    "source",
)
# Values that mean "not known": the other contact's value wins by default.
EMPTY: dict[str, tuple[Any, ...]] = {"gender": ("unknown",)}
# A conflict is decided by the kept contact, whatever is empty: the lifecycle is where the
# kept contact stands in the funnel, not a blank to be filled.
KEEP_BY_DEFAULT = frozenset({"lifecycle"})
CHOICES = ("keep", "merge")

MergeHook = Callable[[Session, Contact, Contact, datetime], None]
_hooks: list[MergeHook] = []


class MergeError(UserFacingError):
    """Two contacts cannot be merged (as asked)."""


@dataclass(frozen=True)
class FieldComparison:
    """One field of two contacts side by side, for the page that lets a marketer choose.

    ``survivor`` is "low" or "high": whose value survives by default when the contact with the
    lower id is kept. ``choosable`` is False where nothing needs choosing: equal values, or a
    custom value only one of them has (custom values are united).
    """

    name: str  # a MERGE_FIELDS entry or "custom.<key>"
    low: Any
    high: Any
    differs: bool
    choosable: bool
    survivor: str


def register_merge_hook(fn: MergeHook) -> MergeHook:
    """Run ``fn(session, keep, merge, now)`` in every merge; usable as a decorator.

    The contract, for domains that hold rows of a contact (consent ledger, sequence
    enrolments, …):

    - the hook runs inside the merge's transaction, after both rows were locked and before
      anything changes: both contacts still exist with their own field values, and the merged
      contact's events and messages are still its own;
    - it must move its rows from ``merge.id`` to ``keep.id`` (or delete what cannot survive)
      with ``flush()`` only, never commit: the merged row is deleted after all hooks ran, and
      rows still pointing at it then are cascaded or nulled by their foreign keys;
    - where the two contacts disagree about what they allowed, the result must never widen it:
      the kept contact's consent becomes the stricter of the two (an opt-out or a withdrawal
      of either wins over a consent of the other);
    - raising refuses the whole merge (the adapter rolls back); a UserFacingError is shown.

    Hooks run in registration order.
    """
    if fn not in _hooks:
        _hooks.append(fn)
    return fn


def unregister_merge_hook(fn: MergeHook) -> None:
    if fn in _hooks:
        _hooks.remove(fn)


def _is_empty(field: str, value: Any) -> bool:
    return value is None or value == "" or value in EMPTY.get(field, ())


def default_choice(field: str, keep_value: Any, merge_value: Any) -> str:
    """Whose value survives when nobody chose: the kept one's, unless it is empty."""
    if field in KEEP_BY_DEFAULT:
        return "keep"
    if _is_empty(field, keep_value) and not _is_empty(field, merge_value):
        return "merge"
    return "keep"


def compare_fields(low: Contact, high: Contact) -> list[FieldComparison]:
    """Every merge field and every custom value of two contacts, in display order."""
    rows = []
    low_custom, high_custom = low.custom or {}, high.custom or {}
    pairs = [(f, getattr(low, f), getattr(high, f)) for f in MERGE_FIELDS] + [
        (f"custom.{key}", low_custom.get(key), high_custom.get(key))
        for key in sorted(set(low_custom) | set(high_custom))
    ]
    for name, mine, theirs in pairs:
        differs = mine != theirs
        one_sided = _is_empty(name, mine) or _is_empty(name, theirs)
        rows.append(
            FieldComparison(
                name=name,
                low=mine,
                high=theirs,
                differs=differs,
                choosable=differs and not (name.startswith("custom.") and one_sided),
                survivor="high" if default_choice(name, mine, theirs) == "merge" else "low",
            )
        )
    return rows


def _json(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _check_choices(choices: dict[str, str], custom_keys: set[str]) -> None:
    for field, choice in choices.items():
        known = field in MERGE_FIELDS or (
            field.startswith("custom.") and field.removeprefix("custom.") in custom_keys
        )
        if not known:
            raise MergeError(N_("%(field)s cannot be chosen when merging."), field=field)
        if choice not in CHOICES:
            raise MergeError(N_("Choose keep or merge for %(field)s."), field=field)


def _pk(contact: Contact) -> int:
    # From the identity key: reading .id of an expired object would load a row that may be gone.
    identity = inspect(contact).identity
    return int(identity[0]) if identity else contact.id


def _lock(session: Session, keep: Contact, merge: Contact) -> None:
    # Lower id first: two merges of the same pair lock in the same order and cannot deadlock.
    # The refresh re-reads both rows under the lock, so a merge that finished a moment ago is
    # noticed here instead of as a failed DELETE later.
    for contact in sorted((keep, merge), key=_pk):
        try:
            session.refresh(contact, with_for_update=True)
        except InvalidRequestError:  # also ObjectDeletedError
            raise MergeError(
                N_("Contact %(id)s no longer exists; it was probably merged already."),
                id=_pk(contact),
            ) from None


def merge_contacts(
    session: Session,
    *,
    keep: Contact,
    merge: Contact,
    choices: dict[str, str],
    user: User | None,
    now: datetime,
) -> Contact:
    """Fold ``merge`` into ``keep``, delete ``merge`` and return ``keep``; flushes, never commits.

    ``choices`` maps a field of MERGE_FIELDS or ``custom.<key>`` to "keep" or "merge": whose
    value survives. Without a choice the kept contact's value survives unless it is empty and
    the other one's is not; the lifecycle stays the kept one's. Tags are united; custom values
    are united, ``custom.<key>`` choices decide where both have a value.

    Every event and outbox message of the merged contact moves to the kept one, merge hooks
    (see register_merge_hook) move the rows of other domains, and one ``contact_merged`` event
    on the kept contact records who merged, what was taken and every value that was replaced
    or dropped on either side.
    """
    if _pk(keep) == _pk(merge):
        raise MergeError(N_("A contact cannot be merged with itself."))
    _lock(session, keep, merge)
    keep_custom = dict(keep.custom or {})
    merge_custom = dict(merge.custom or {})
    _check_choices(choices, set(keep_custom) | set(merge_custom))

    new_values: dict[str, Any] = {}
    taken: dict[str, Any] = {}  # field → value that came from the merged contact
    replaced: dict[str, Any] = {}  # field → the kept contact's value that was overwritten
    dropped: dict[str, Any] = {}  # field → the merged contact's value that did not survive
    for field in MERGE_FIELDS:
        mine, theirs = getattr(keep, field), getattr(merge, field)
        if mine == theirs:
            continue
        choice = choices.get(field) or default_choice(field, mine, theirs)
        if choice == "merge":
            new_values[field] = theirs
            taken[field] = _json(theirs)
            if not _is_empty(field, mine):
                replaced[field] = _json(mine)
        elif not _is_empty(field, theirs):
            dropped[field] = _json(theirs)

    custom = dict(keep_custom)
    for key, theirs in merge_custom.items():
        mine = keep_custom.get(key)
        if mine == theirs:
            continue
        name = f"custom.{key}"
        choice = choices.get(name) or default_choice(name, mine, theirs)
        if choice == "merge":
            custom[key] = theirs
            taken[name] = theirs
            if not _is_empty(name, mine):
                replaced[name] = mine
        elif not _is_empty(name, theirs):
            dropped[name] = theirs
    tags = sorted(set(keep.tags or []) | set(merge.tags or []))

    for hook in list(_hooks):
        hook(session, keep, merge, now)
    merged_id = merge.id

    # Events are append-only for the ORM (see nurture.events). Moving a whole history to the
    # person who survives is the one sanctioned bulk change: the facts stay as they were, only
    # whose they are is corrected, and the contact_merged event below records that it happened.
    session.execute(
        update(Event)
        .where(Event.contact_id == merge.id)
        .values(contact_id=keep.id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Message)
        .where(Message.contact_id == merge.id)
        .values(contact_id=keep.id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(DuplicateDismissal)
        .where(or_(DuplicateDismissal.low_id == merge.id, DuplicateDismissal.high_id == merge.id))
        .execution_options(synchronize_session=False)
    )
    record_event(
        session,
        "contact_merged",
        now=now,
        contact_id=keep.id,
        payload={
            "merged_contact_id": merge.id,
            "merged_email": merge.email,
            "merged_name": " ".join(p for p in (merge.first_name, merge.last_name) if p),
            "merged_created_at": _json(merge.created_at),
            "merged_by_user_id": user.id if user is not None else None,
            "merged_by_email": user.email if user is not None else None,
            "taken": taken,
            "replaced": replaced,
            "dropped": dropped,
        },
    )
    # The merged row goes first: the kept contact may take over its email or customer
    # number, which the unique constraints allow only once the other row is gone.
    session.delete(merge)
    session.flush()
    for field, value in new_values.items():
        setattr(keep, field, value)
    keep.tags = tags
    keep.custom = custom
    keep.updated_at = now
    session.flush()
    _expire_moved(session, merged_id)
    return keep


def _expire_moved(session: Session, merged_id: int) -> None:
    # The bulk updates bypassed the identity map: events and messages of the merged contact
    # already loaded in this session would show its old id until re-read.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Event | Message) and obj.contact_id == merged_id:
            session.expire(obj, ["contact_id"])

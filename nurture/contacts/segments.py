"""Segments: saved filters over contacts, validated JSON compiled to SQLAlchemy expressions.

A definition is JSON, never SQL. Every field name, operator and event type is looked up in an
allow-list; values are checked per type and always reach the database as bound parameters.

Definition
----------
::

    {"match": "all",                      # or "any"; how the top-level conditions combine
     "conditions": [                      # 0 to 50 conditions in all (an empty list: everyone)
       {"field": "lifecycle", "op": "in", "value": ["customer", "at_risk"]},
       {"field": "last_name", "op": "starts_with", "value": "Mü"},
       {"field": "owner_id", "op": "is_empty"},
       {"field": "custom.seats", "op": "gte", "value": 10},
       {"field": "created_at", "op": "within_days", "value": 30},
       {"event": "order", "op": "none_within_days", "days": 180},
       {"event": "complaint", "op": "at_least", "count": 2, "days": 90},
       {"any": [ ...conditions... ]},     # or {"all": [...]}: one level of nesting
     ]}

Field conditions (``field``, ``op``, ``value``; no ``value`` for is_empty/is_not_empty):

======== ========================================================== ============================
type     fields                                                     operators
======== ========================================================== ============================
text     email, first_name, last_name, title, company, industry,    eq, neq, contains,
         company_size, city, country, phone, mobile, website,       starts_with, is_empty,
         linkedin, xing, source, customer_number, time_zone;        is_not_empty
         custom text fields
enum     lifecycle, gender, formality, language; custom choice      eq, in (a list)
date     birthday; custom date fields                               before, after (a date
datetime created_at, updated_at                                     YYYY-MM-DD), within_days,
                                                                    more_than_days_ago (days)
number   custom number fields                                       eq, gt, gte, lt, lte
tags     tags                                                       has, has_not
user     owner_id                                                   eq (a user id), is_empty
======== ========================================================== ============================

Text comparisons ignore case. ``before``/``after`` exclude the day itself; a datetime field is
compared in UTC. ``within_days: N`` means "from N days ago until now".

Event conditions (``event``, ``op``, ``days``, ``count``) look at the events log:
``within_days`` (at least one in the last ``days`` days), ``none_within_days``, ``at_least``
(``count`` or more in the last ``days`` days) and ``never``. Days are 1 to 3650, counts 1 to 1000.

Limits: 50 conditions, strings of 200 characters, lists of 100 values; unknown keys are refused.
Errors are keyed by their path in the definition, e.g. ``conditions.2.value``.

Extension point
---------------
Another domain adds a kind of condition with :func:`register_condition`, without touching the
compiler. A condition's kind is the one registered key it carries (``field`` and ``event`` are
registered the same way)::

    register_condition("consent", validate_consent, compile_consent)
    # {"consent": "newsletter", "op": "confirmed"}

``validate(condition, ctx)`` gets the raw condition (a dict holding the kind's key) and a
:class:`ValidationContext` (``custom_fields``, and ``session`` when the caller has one: a kind
that checks names against its own table must accept well-formed names without it); it
returns the normalised condition (what is stored) or raises
``ConditionInvalid({"op": Message(N_("must be confirmed"))})``, keyed relative to the condition
(``"op"``, ``"value"``; ``""`` for the condition as a whole). It must refuse keys it does not
know. ``compile(condition, ctx)`` gets the normalised condition and a :class:`CompileContext`
(``now``, ``custom_fields``) and returns a boolean SQLAlchemy expression over ``Contact`` built
only from bound values, e.g. a correlated ``exists()`` on the kind's own table. An optional
:class:`BuilderOffer` lets the segment builder offer the kind as a group of subjects.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    String,
    and_,
    cast,
    exists,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from nurture.auth.models import User
from nurture.contacts.custom_fields import Definitions, clean_value, definitions, parse_date
from nurture.contacts.fields import LANGUAGES
from nurture.contacts.models import FORMALITIES, GENDERS, Contact, CustomField, Lifecycle, Segment
from nurture.errors import N_, UserFacingError
from nurture.events import Event

MAX_CONDITIONS = 50
MAX_TEXT = 200
MAX_LIST = 100
MAX_DAYS = 3650
MAX_COUNT = 1000
MAX_NAME = 100
# Beyond this a float loses whole numbers, and PostgreSQL could not bind an int at all.
MAX_NUMBER = 10**15

TEXT_OPS = ("eq", "neq", "contains", "starts_with", "is_empty", "is_not_empty")
ENUM_OPS = ("eq", "in")
DATE_OPS = ("before", "after", "within_days", "more_than_days_ago")
NUMBER_OPS = ("eq", "gt", "gte", "lt", "lte")
TAGS_OPS = ("has", "has_not")
USER_OPS = ("eq", "is_empty")
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "enum": ENUM_OPS,
    "date": DATE_OPS,
    "datetime": DATE_OPS,
    "number": NUMBER_OPS,
    "tags": TAGS_OPS,
    "user": USER_OPS,
}
NO_VALUE_OPS = ("is_empty", "is_not_empty")
DAY_OPS = ("within_days", "more_than_days_ago")

EVENT_TYPES = (
    "order",
    "complaint",
    "cancellation",
    "expected_revenue",
    "call",
    "meeting",
    "note",
    "sent",
    "bounced",
    "opened",
    "clicked",
    "replied",
    "contact_created",
)
# op → the keys it needs besides "event" and "op"
EVENT_OPS: dict[str, tuple[str, ...]] = {
    "within_days": ("days",),
    "none_within_days": ("days",),
    "at_least": ("count", "days"),
    "never": (),
}
GROUP_KEYS = ("any", "all")
MATCHES = ("all", "any")


# -- messages and errors -----------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A msgid with its parameters: English via str(), translated where it is shown."""

    msgid: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.msgid % dict(self.params) if self.params else self.msgid


def _msg(msgid: str, **params: Any) -> Message:
    return Message(msgid, params)


class ConditionInvalid(Exception):
    """Raised by a condition validator; keys are relative to the condition ("" for itself)."""

    def __init__(self, messages: Mapping[str, Message]) -> None:
        super().__init__(", ".join(f"{k}: {v}" for k, v in messages.items()))
        self.messages = dict(messages)


class SegmentError(UserFacingError):
    """The segment cannot be saved or compiled; ``errors`` maps each path to its message."""

    def __init__(self, messages: Mapping[str, Message]) -> None:
        self.messages = dict(messages)
        self.errors = {path: str(message) for path, message in self.messages.items()}
        super().__init__(
            N_("The segment is invalid: %(fields)s"), fields=", ".join(sorted(self.errors))
        )


# -- the field allow-list ----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One field a condition may name: its type and the SQL expression it reads."""

    name: str
    type: str
    column: Any = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    custom: CustomField | None = None


_TEXT_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "industry",
    "company_size",
    "city",
    "country",
    "phone",
    "mobile",
    "website",
    "linkedin",
    "xing",
    "source",
)
BUILTIN_FIELDS: dict[str, FieldSpec] = {
    **{name: FieldSpec(name, "text", getattr(Contact, name)) for name in _TEXT_COLUMNS},
    "customer_number": FieldSpec("customer_number", "text", Contact.customer_number, nullable=True),
    "time_zone": FieldSpec("time_zone", "text", Contact.time_zone, nullable=True),
    "lifecycle": FieldSpec(
        "lifecycle", "enum", Contact.lifecycle, choices=tuple(m.value for m in Lifecycle)
    ),
    "gender": FieldSpec("gender", "enum", Contact.gender, choices=GENDERS),
    "formality": FieldSpec("formality", "enum", Contact.formality, choices=FORMALITIES),
    "language": FieldSpec("language", "enum", Contact.language, choices=LANGUAGES),
    "birthday": FieldSpec("birthday", "date", Contact.birthday, nullable=True),
    "created_at": FieldSpec("created_at", "datetime", Contact.created_at),
    "updated_at": FieldSpec("updated_at", "datetime", Contact.updated_at),
    "tags": FieldSpec("tags", "tags", Contact.tags),
    "owner_id": FieldSpec("owner_id", "user", Contact.owner_id, nullable=True),
}
CUSTOM_PREFIX = "custom."
_CUSTOM_TYPES = {"text": "text", "number": "number", "date": "date", "choice": "enum"}


def field_spec(name: Any, custom_fields: Definitions) -> FieldSpec | None:
    """The allow-listed field called ``name``, or None: the only way a name reaches SQL."""
    if not isinstance(name, str):
        return None
    if name in BUILTIN_FIELDS:
        return BUILTIN_FIELDS[name]
    if not name.startswith(CUSTOM_PREFIX):
        return None
    custom = custom_fields.get(name.removeprefix(CUSTOM_PREFIX))
    if custom is None:
        return None
    element = Contact.custom[custom.key]
    kind = _CUSTOM_TYPES[custom.kind]
    column = element.as_float() if kind == "number" else element.as_string()
    return FieldSpec(
        name, kind, column, choices=tuple(custom.choices), nullable=True, custom=custom
    )


def available_fields(custom_fields: Definitions) -> list[FieldSpec]:
    """Every field a condition may use: the built-in ones, then the custom ones."""
    specs = list(BUILTIN_FIELDS.values())
    for key in custom_fields:
        spec = field_spec(CUSTOM_PREFIX + key, custom_fields)
        if spec is not None:
            specs.append(spec)
    return specs


# -- the registry of condition kinds -----------------------------------------------------------


@dataclass(frozen=True)
class ValidationContext:
    custom_fields: Definitions
    # Present where a service validates (saving, counting, previews); None where a caller has
    # only the custom fields, so a kind must then check what it can without the database.
    session: Session | None = None


@dataclass(frozen=True)
class CompileContext:
    now: datetime
    custom_fields: Definitions

    @property
    def today(self) -> date:
        return self.now.astimezone(UTC).date()


Validator = Callable[[dict[str, Any], ValidationContext], dict[str, Any]]
Compiler = Callable[[dict[str, Any], CompileContext], ColumnElement[bool]]


@dataclass(frozen=True)
class BuilderOffer:
    """How the segment builder offers a registered kind: a heading over one subject per value
    of the kind's key (read from the database) and operators that take no further input.

    Texts are msgids (mark them with ``N_``); the builder translates them where it shows them.
    """

    heading: str
    ops: tuple[tuple[str, str], ...]  # (op, msgid of its label)
    subjects: Callable[[Session], list[tuple[str, str]]]  # (value of the kind's key, label)
    help: str = ""


@dataclass(frozen=True)
class ConditionKind:
    key: str
    validate: Validator
    compile: Compiler
    offer: BuilderOffer | None = None


_KINDS: dict[str, ConditionKind] = {}


def register_condition(
    kind: str, validate: Validator, compile: Compiler, *, offer: BuilderOffer | None = None
) -> None:
    """Teach segments a new kind of condition, recognised by the key ``kind`` (see above)."""
    if kind in GROUP_KEYS or kind == "match" or kind == "conditions":
        raise ValueError(f"{kind!r} is reserved")
    _KINDS[kind] = ConditionKind(kind, validate, compile, offer)


def builder_offers() -> dict[str, BuilderOffer]:
    """The registered kinds the segment builder offers, by their key."""
    return {key: kind.offer for key, kind in _KINDS.items() if kind.offer is not None}


# -- value checks ------------------------------------------------------------------------------


def _whole(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConditionInvalid(
            {"": _msg(N_("must be a whole number from %(min)d to %(max)d"), min=low, max=high)}
        )
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ConditionInvalid({"": _msg(N_("must be text"))})
    if len(value) > MAX_TEXT:
        raise ConditionInvalid({"": _msg(N_("must be at most %(max)d characters"), max=MAX_TEXT)})
    # Stored text has its whitespace collapsed (contacts.fields); the value must match that.
    text = " ".join(value.split())
    if not text:
        raise ConditionInvalid({"": _msg(N_("must not be empty"))})
    if _has_control(text):
        raise ConditionInvalid({"": _msg(N_("must not contain control characters"))})
    return text


def _has_control(text: str) -> bool:
    # PostgreSQL refuses NUL in text outright; no stored value holds any of these.
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _choice(spec: FieldSpec, value: Any) -> str:
    text = _text(value)
    for choice in spec.choices:
        if choice.casefold() == text.casefold():
            return choice
    raise ConditionInvalid(
        {"": _msg(N_("must be one of %(choices)s"), choices=", ".join(spec.choices))}
    )


def _choices(spec: FieldSpec, value: Any) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
        raise ConditionInvalid(
            {"": _msg(N_("must be a list of 1 to %(max)d values"), max=MAX_LIST)}
        )
    clean: list[str] = []
    for index, item in enumerate(value):
        try:
            choice = _choice(spec, item)
        except ConditionInvalid as exc:
            raise ConditionInvalid({str(index): exc.messages[""]}) from None
        if choice not in clean:
            clean.append(choice)
    return clean


def _date(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ConditionInvalid({"": _msg(N_("must be a date as YYYY-MM-DD"))})
    try:
        return parse_date(value).isoformat()
    except ValueError:
        raise ConditionInvalid({"": _msg(N_("must be a date as YYYY-MM-DD"))}) from None


def _number(spec: FieldSpec, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConditionInvalid({"": _msg(N_("must be a number"))})
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ConditionInvalid({"": _msg(N_("must be a number"))})
    assert spec.custom is not None
    try:
        number = clean_value(spec.custom, value)
    except ValueError:
        number = None
    if not isinstance(number, int | float):
        raise ConditionInvalid({"": _msg(N_("must be a number"))})
    if abs(number) > MAX_NUMBER:
        raise ConditionInvalid(
            {"": _msg(N_("must be between -%(max)s and %(max)s"), max="1000000000000000")}
        )
    return number


def _tag(value: Any) -> str:
    # Tags are stored lower-cased with collapsed whitespace (contacts.fields).
    return _text(value).lower()


def _field_value(spec: FieldSpec, op: str, value: Any) -> Any:
    if op in DAY_OPS:
        return _whole(value, 1, MAX_DAYS)
    if spec.type == "text":
        text = _text(value)
        if spec.custom is not None:
            try:
                clean_value(spec.custom, text)
            except ValueError:
                raise ConditionInvalid({"": _msg(N_("must be text"))}) from None
        return text
    if spec.type == "enum":
        return _choices(spec, value) if op == "in" else _choice(spec, value)
    if spec.type in ("date", "datetime"):
        return _date(value)
    if spec.type == "number":
        return _number(spec, value)
    if spec.type == "tags":
        return _tag(value)
    # user: a user id; whether the user still exists does not matter to a filter.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise ConditionInvalid({"": _msg(N_("must be a user id"))})
    return value


def _prefixed(prefix: str, exc: ConditionInvalid) -> dict[str, Message]:
    return {".".join(p for p in (prefix, key) if p): m for key, m in exc.messages.items()}


def _unknown_keys(condition: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Message]:
    return {
        str(key)[:MAX_TEXT]: _msg(N_("is not allowed here"))
        for key in condition
        if key not in allowed
    }


def _validate_field(condition: dict[str, Any], ctx: ValidationContext) -> dict[str, Any]:
    errors = _unknown_keys(condition, ("field", "op", "value"))
    spec = field_spec(condition["field"], ctx.custom_fields)
    if spec is None:
        errors["field"] = _msg(N_("is not a known field"))
        raise ConditionInvalid(errors)
    ops = OPS_BY_TYPE[spec.type]
    op = condition.get("op")
    if not isinstance(op, str) or op not in ops:
        errors["op"] = _msg(N_("must be one of %(choices)s"), choices=", ".join(ops))
        raise ConditionInvalid(errors)
    clean: dict[str, Any] = {"field": spec.name, "op": op}
    if op in NO_VALUE_OPS:
        if "value" in condition:
            errors["value"] = _msg(N_("must be left out for this operator"))
    elif "value" not in condition or condition["value"] is None:
        errors["value"] = _msg(N_("is required"))
    else:
        try:
            clean["value"] = _field_value(spec, op, condition["value"])
        except ConditionInvalid as exc:
            errors |= _prefixed("value", exc)
    if errors:
        raise ConditionInvalid(errors)
    return clean


def _validate_event(condition: dict[str, Any], ctx: ValidationContext) -> dict[str, Any]:
    errors = _unknown_keys(condition, ("event", "op", "days", "count"))
    kind = condition["event"]
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        errors["event"] = _msg(
            N_("is not a known event type; use one of %(choices)s"), choices=", ".join(EVENT_TYPES)
        )
    op = condition.get("op")
    if not isinstance(op, str) or op not in EVENT_OPS:
        errors["op"] = _msg(N_("must be one of %(choices)s"), choices=", ".join(EVENT_OPS))
        raise ConditionInvalid(errors)
    clean: dict[str, Any] = {"event": kind, "op": op}
    limits = {"days": MAX_DAYS, "count": MAX_COUNT}
    for key in ("count", "days"):
        if key not in EVENT_OPS[op]:
            if key in condition:
                errors[key] = _msg(N_("must be left out for this operator"))
            continue
        if key not in condition or condition[key] is None:
            errors[key] = _msg(N_("is required"))
            continue
        try:
            clean[key] = _whole(condition[key], 1, limits[key])
        except ConditionInvalid as exc:
            errors |= _prefixed(key, exc)
    if errors:
        raise ConditionInvalid(errors)
    return clean


# -- compiling ---------------------------------------------------------------------------------


class TagsHave(FunctionElement[bool]):
    """True where the JSON list ``column`` holds ``tag``; rendered per dialect below.

    The expression stays portable, so callers need not know the database behind a session.
    """

    type = Boolean()
    name = "tags_have"
    inherit_cache = True


@compiles(TagsHave)
def _tags_have_sqlite(element: TagsHave, compiler: SQLCompiler, **kw: Any) -> str:
    column, tag = list(element.clauses)
    items = func.json_each(column).table_valued("value")
    return compiler.process(exists().where(items.c.value == tag).select_from(items), **kw)


@compiles(TagsHave, "postgresql")
def _tags_have_postgresql(element: TagsHave, compiler: SQLCompiler, **kw: Any) -> str:
    column, tag = list(element.clauses)
    # The column is JSON (not JSONB), which has no containment operator of its own.
    wanted = func.jsonb_build_array(cast(tag, String))
    return compiler.process(cast(column, JSONB).contains(wanted), **kw)


def _escape_like(value: str) -> str:
    return value.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _text_condition(spec: FieldSpec, op: str, value: Any) -> ColumnElement[bool]:
    column = spec.column
    if op == "is_empty":
        return or_(column.is_(None), column == "") if spec.nullable else column == ""
    if op == "is_not_empty":
        return and_(column.is_not(None), column != "") if spec.nullable else column != ""
    if spec.name == "email":
        # Stored lower-cased by Python; a plain comparison keeps the unique and prefix indexes.
        needle = value.lower()
        if op == "eq":
            return column == needle
        if op == "neq":
            return column != needle
        if op == "contains":
            return column.contains(needle, autoescape=True)
        return column.startswith(needle, autoescape=True)
    if op == "eq":
        return func.lower(column) == func.lower(value)
    if op == "neq":
        differs = func.lower(column) != func.lower(value)
        return or_(column.is_(None), differs) if spec.nullable else differs
    if op == "contains":
        return column.icontains(value, autoescape=True)
    # lower(col) LIKE lower(:v) || '%', the form ix_contacts_last_name_lower serves; SQLAlchemy's
    # istartswith would be ILIKE on PostgreSQL, which no btree index can answer.
    return func.lower(column).like(func.lower(_escape_like(value)) + "%", escape="/")


def _bound(spec: FieldSpec, day: date, *, end_of_day: bool = False) -> Any:
    """``day`` in the form the field's column compares with."""
    if end_of_day:
        day += timedelta(days=1)
    if spec.type == "datetime":
        return datetime.combine(day, time(), tzinfo=UTC)
    if spec.custom is not None:
        return day.isoformat()  # custom dates are ISO strings, which sort like dates
    return day


def _date_condition(
    spec: FieldSpec, op: str, value: Any, ctx: CompileContext
) -> ColumnElement[bool]:
    column = spec.column
    if op == "before":
        return column < _bound(spec, date.fromisoformat(value))
    if op == "after":
        return column >= _bound(spec, date.fromisoformat(value), end_of_day=True)
    if spec.type == "datetime":
        cutoff: Any = ctx.now - timedelta(days=value)
        upper: Any = ctx.now
    else:
        cutoff = _bound(spec, ctx.today - timedelta(days=value))
        upper = _bound(spec, ctx.today)
    if op == "within_days":
        return and_(column >= cutoff, column <= upper)
    return column < cutoff


def _compile_field(condition: dict[str, Any], ctx: CompileContext) -> ColumnElement[bool]:
    spec = field_spec(condition["field"], ctx.custom_fields)
    assert spec is not None, "compile_definition validates with the same custom fields"
    op, value = condition["op"], condition.get("value")
    column = spec.column
    if spec.type == "text":
        return _text_condition(spec, op, value)
    if spec.type == "enum":
        if spec.name == "lifecycle":
            value = [Lifecycle(v) for v in value] if op == "in" else Lifecycle(value)
        return column.in_(value) if op == "in" else column == value
    if spec.type in ("date", "datetime"):
        return _date_condition(spec, op, value, ctx)
    if spec.type == "number":
        return {
            "eq": column == value,
            "gt": column > value,
            "gte": column >= value,
            "lt": column < value,
            "lte": column <= value,
        }[op]
    if spec.type == "tags":
        have = TagsHave(column, value)
        return have if op == "has" else not_(have)
    return column.is_(None) if op == "is_empty" else column == value


def _compile_event(condition: dict[str, Any], ctx: CompileContext) -> ColumnElement[bool]:
    kind, op = condition["event"], condition["op"]
    # Correlated on contacts.id and served by ix_events_contact_id_type_occurred_at; the
    # cutoff is computed here from the injected now and bound as a parameter.
    where = [Event.contact_id == Contact.id, Event.type == kind]
    if op != "never":
        where.append(Event.occurred_at >= ctx.now - timedelta(days=condition["days"]))
    if op == "at_least":
        # Aggregating the few recent events of one type beats counting per contact.
        frequent = (
            select(Event.contact_id)
            .where(*where[1:])
            .group_by(Event.contact_id)
            .having(func.count() >= condition["count"])
        )
        return Contact.id.in_(frequent)
    found = exists().where(*where)
    return found if op == "within_days" else ~found


register_condition("field", _validate_field, _compile_field)
register_condition("event", _validate_event, _compile_event)


# -- the definition ----------------------------------------------------------------------------


def _kind_of(condition: dict[str, Any]) -> str | None:
    present = [key for key in (*_KINDS, *GROUP_KEYS) if key in condition]
    return present[0] if len(present) == 1 else None


def _validate_condition(
    condition: Any, path: str, ctx: ValidationContext, *, nested: bool
) -> tuple[dict[str, Any] | None, dict[str, Message]]:
    if not isinstance(condition, dict):
        return None, {path: _msg(N_("must be an object"))}
    kind = _kind_of(condition)
    if kind is None:
        keys = ", ".join((*_KINDS, *GROUP_KEYS))
        return None, {path: _msg(N_("must have exactly one of the keys %(keys)s"), keys=keys)}
    if kind in GROUP_KEYS:
        if nested:
            return None, {path: _msg(N_("groups can be nested only one level deep"))}
        errors = _unknown_keys(condition, (kind,))
        errors = {f"{path}.{key}": m for key, m in errors.items()}
        items, item_errors = _validate_list(condition[kind], f"{path}.{kind}", ctx, nested=True)
        errors |= item_errors
        if not errors and not items:
            errors[f"{path}.{kind}"] = _msg(N_("must contain at least one condition"))
        return ({kind: items} if not errors else None), errors
    try:
        return _KINDS[kind].validate(condition, ctx), {}
    except ConditionInvalid as exc:
        return None, _prefixed(path, exc)


def _validate_list(
    value: Any, path: str, ctx: ValidationContext, *, nested: bool
) -> tuple[list[dict[str, Any]], dict[str, Message]]:
    if not isinstance(value, list):
        return [], {path: _msg(N_("must be a list"))}
    if len(value) > MAX_CONDITIONS:
        return [], {path: _msg(N_("must hold at most %(max)d conditions"), max=MAX_CONDITIONS)}
    clean: list[dict[str, Any]] = []
    errors: dict[str, Message] = {}
    for index, condition in enumerate(value):
        item, item_errors = _validate_condition(condition, f"{path}.{index}", ctx, nested=nested)
        errors |= item_errors
        if item is not None:
            clean.append(item)
    return clean, errors


def _leaves(conditions: list[dict[str, Any]]) -> int:
    total = 0
    for condition in conditions:
        group = next((key for key in GROUP_KEYS if key in condition), None)
        total += len(condition[group]) if group else 1
    return total


def validate_definition(
    definition: Any, custom_fields: Definitions, *, session: Session | None = None
) -> dict[str, Any]:
    """The normalised definition, or SegmentError naming each problem by its path.

    With a ``session`` the kinds that name rows of their own (consent topics) check that those
    exist; every service that has one passes it.
    """
    if not isinstance(definition, dict):
        raise SegmentError({"definition": _msg(N_("must be an object"))})
    errors = _unknown_keys(definition, ("match", "conditions"))
    match = definition.get("match", "all")
    if not isinstance(match, str) or match not in MATCHES:
        errors["match"] = _msg(N_('must be "all" or "any"'))
    if "conditions" not in definition:
        errors["conditions"] = _msg(N_("is required"))
        raise SegmentError(errors)
    ctx = ValidationContext(custom_fields, session)
    conditions, condition_errors = _validate_list(
        definition["conditions"], "conditions", ctx, nested=False
    )
    errors |= condition_errors
    if not errors and _leaves(conditions) > MAX_CONDITIONS:
        errors["conditions"] = _msg(N_("must hold at most %(max)d conditions"), max=MAX_CONDITIONS)
    if errors:
        raise SegmentError(errors)
    return {"match": match, "conditions": conditions}


def _combine(match: str, parts: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    if not parts:
        return true()
    if len(parts) == 1:
        return parts[0]
    return and_(*parts) if match == "all" else or_(*parts)


def _compile_conditions(
    match: str, conditions: list[dict[str, Any]], ctx: CompileContext
) -> ColumnElement[bool]:
    parts = []
    for condition in conditions:
        group = next((key for key in GROUP_KEYS if key in condition), None)
        if group is not None:
            parts.append(_compile_conditions(group, condition[group], ctx))
        else:
            kind = _kind_of(condition)
            assert kind is not None
            parts.append(_KINDS[kind].compile(condition, ctx))
    return _combine(match, parts)


def compile_definition(
    definition: Any,
    *,
    now: datetime,
    custom_fields: Definitions,
    session: Session | None = None,
) -> ColumnElement[bool]:
    """A boolean expression over ``Contact`` for ``select(Contact).where(...)``.

    The definition is validated again here (SegmentError if it is no longer valid, e.g. a
    custom field was deleted), so nothing unchecked can ever reach the compiler.
    """
    clean = validate_definition(definition, custom_fields, session=session)
    ctx = CompileContext(now=now, custom_fields=custom_fields)
    return _compile_conditions(clean["match"], clean["conditions"], ctx)


# -- services ----------------------------------------------------------------------------------


def _expression(session: Session, definition: Any, now: datetime) -> ColumnElement[bool]:
    return compile_definition(
        definition, now=now, custom_fields=definitions(session), session=session
    )


def count_matching(session: Session, definition: Any, *, now: datetime) -> int:
    stmt = select(func.count()).select_from(Contact).where(_expression(session, definition, now))
    return session.scalar(stmt) or 0


def sample_matching(
    session: Session, definition: Any, *, now: datetime, limit: int = 10
) -> list[Contact]:
    """The first ``limit`` matching contacts by id."""
    stmt = (
        select(Contact)
        .where(_expression(session, definition, now))
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def preview(
    session: Session, definition: Any, *, now: datetime, limit: int = 10
) -> tuple[int, list[Contact]]:
    """How many contacts match, and the first ``limit`` of them.

    Without matches the sample is skipped: PostgreSQL would look for the first ten along the
    primary key through every contact, which for an empty segment costs more than the count.
    """
    count = count_matching(session, definition, now=now)
    if not count:
        return 0, []
    return count, sample_matching(session, definition, now=now, limit=limit)


def list_matching(
    session: Session,
    definition: Any,
    *,
    now: datetime,
    after_id: int | None = None,
    limit: int = 100,
) -> list[tuple[int, str]]:
    """(id, email) of matching contacts by id, keyset-paged after ``after_id``."""
    stmt = (
        select(Contact.id, Contact.email)
        .where(_expression(session, definition, now))
        .order_by(Contact.id)
        .limit(limit)
    )
    if after_id is not None:
        stmt = stmt.where(Contact.id > after_id)
    return [(row.id, row.email) for row in session.execute(stmt)]


def segment_query(session: Session, segment: Segment, *, now: datetime) -> Select[int]:
    """A ``Select`` of the ids of the contacts in ``segment`` now (e.g. to enrol them)."""
    return select(Contact.id).where(_expression(session, segment.definition, now))


def get_segment(session: Session, segment_id: int) -> Segment | None:
    return session.get(Segment, segment_id)


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(func.lower(Segment.name), Segment.id)))


def _clean(
    session: Session, name: Any, definition: Any, *, segment_id: int | None
) -> tuple[str, dict[str, Any]]:
    errors: dict[str, Message] = {}
    clean_name = " ".join(name.split()) if isinstance(name, str) else ""
    if not clean_name or len(clean_name) > MAX_NAME or _has_control(clean_name):
        errors["name"] = _msg(N_("must be 1 to %(max)d characters long"), max=MAX_NAME)
    else:
        same = select(Segment.id).where(func.lower(Segment.name) == clean_name.lower())
        if segment_id is not None:
            same = same.where(Segment.id != segment_id)
        if session.scalar(same) is not None:
            errors["name"] = _msg(N_("is already the name of another segment"))
    clean_definition: dict[str, Any] = {}
    try:
        clean_definition = validate_definition(definition, definitions(session), session=session)
    except SegmentError as exc:
        errors |= exc.messages
    if errors:
        raise SegmentError(errors)
    return clean_name, clean_definition


def create_segment(
    session: Session, *, name: Any, definition: Any, user: User | None, now: datetime
) -> Segment:
    clean_name, clean_definition = _clean(session, name, definition, segment_id=None)
    segment = Segment(
        name=clean_name,
        definition=clean_definition,
        created_by_id=user.id if user is not None else None,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return segment


def update_segment(
    session: Session, segment: Segment, *, name: Any, definition: Any, now: datetime
) -> bool:
    """Replace name and definition; True if anything changed."""
    clean_name, clean_definition = _clean(session, name, definition, segment_id=segment.id)
    if segment.name == clean_name and segment.definition == clean_definition:
        return False
    segment.name = clean_name
    segment.definition = clean_definition
    segment.updated_at = now
    session.flush()
    return True


def delete_segment(session: Session, segment: Segment) -> None:
    session.delete(segment)
    session.flush()

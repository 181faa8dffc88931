"""Segments: the list, the builder (new and edit, with count and sample preview) and delete.

The builder is a plain form of condition rows, so it works without JavaScript;
``static/js/segment-builder.js`` adds a live preview through the ``segment_preview`` endpoint.
The form only collects strings: turning rows into a definition happens here, judging it is
``contacts.segments``' job, and its messages are shown next to the row they concern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.routing import BuildError

from nurture.auth.access import login_required, me, roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role, User
from nurture.contacts.custom_fields import Definitions, definitions
from nurture.contacts.forms import FIELD_LABELS as CONTACT_FIELD_LABELS
from nurture.contacts.models import Contact, Segment
from nurture.contacts.segments import (
    DAY_OPS,
    EVENT_OPS,
    EVENT_TYPES,
    GROUP_KEYS,
    MAX_CONDITIONS,
    MAX_NAME,
    NO_VALUE_OPS,
    OPS_BY_TYPE,
    BuilderOffer,
    Message,
    SegmentError,
    available_fields,
    builder_offers,
    count_matching,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    preview,
    update_segment,
    validate_definition,
)
from nurture.contacts.ui import bp
from nurture.web.context import db_session, now

EDITORS = (Role.ADMIN, Role.MARKETER)
EMPTY_ROWS = 8
ADD_ROWS = 4
MAX_ROWS = MAX_CONDITIONS + EMPTY_ROWS
# Group numbers offered in each row: at least this many, more when a saved segment has more.
MIN_GROUPS = 4
GROUP = re.compile(r"[1-9][0-9]?")
SAMPLE_SIZE = 10
# Longer inputs are cut here; the service's own limits (200 characters) still apply.
INPUT_MAX = 1000
EVENT_PREFIX = "event:"
# Subjects of kinds other domains register (e.g. "consent:newsletter") are "<kind>:<value>".
KIND_SEPARATOR = ":"
WHOLE = re.compile(r"[0-9]{1,9}")

# The contact forms' labels, plus the two timestamps only segments filter on.
FIELD_LABELS = CONTACT_FIELD_LABELS | {
    "created_at": _l("Created"),
    "updated_at": _l("Last changed"),
}
EVENT_LABELS = {
    "order": _l("Order"),
    "complaint": _l("Complaint"),
    "cancellation": _l("Cancellation"),
    "expected_revenue": _l("Expected revenue"),
    "call": _l("Call"),
    "meeting": _l("Meeting"),
    "note": _l("Note"),
    "sent": _l("Mail sent"),
    "bounced": _l("Mail bounced"),
    "opened": _l("Mail opened"),
    "clicked": _l("Link clicked"),
    "replied": _l("Replied"),
    "contact_created": _l("Contact created"),
}
TYPE_LABELS = {
    "text": _l("Text"),
    "enum": _l("Choice"),
    "date": _l("Date"),
    "datetime": _l("Date"),
    "number": _l("Number"),
    "tags": _l("Tags"),
    "user": _l("Owner"),
    "event": _l("Behaviour"),
}
OP_LABELS = {
    "eq": _l("is"),
    "neq": _l("is not"),
    "contains": _l("contains"),
    "starts_with": _l("starts with"),
    "is_empty": _l("is empty"),
    "is_not_empty": _l("is not empty"),
    "in": _l("is one of (comma-separated)"),
    "before": _l("is before (date)"),
    "after": _l("is after (date)"),
    "more_than_days_ago": _l("more than … days ago"),
    "gt": _l("greater than"),
    "gte": _l("at least"),
    "lt": _l("less than"),
    "lte": _l("at most"),
    "has": _l("has the tag"),
    "has_not": _l("does not have the tag"),
}
# Ops of event conditions; "within_days" is shared with dates and reads well for both.
EVENT_OP_LABELS = {
    "within_days": _l("within the last … days"),
    "none_within_days": _l("none within the last … days"),
    "at_least": _l("at least … times within … days"),
    "never": _l("never"),
}
DATE_WITHIN_LABEL = _l("within the last … days")
INPUT_LABELS = {
    "field": _l("Field"),
    "event": _l("Field"),
    "op": _l("Condition"),
    "value": _l("Value"),
    "count": _l("Times"),
    "days": _l("Days"),
}


@dataclass
class Row:
    """One condition row of the form, as the strings the browser sent."""

    group: str = ""
    subject: str = ""
    op: str = ""
    value: str = ""
    count: str = ""
    days: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def blank(self) -> bool:
        return not self.subject


@dataclass
class Builder:
    """The builder's state: name, match, rows, and what is wrong with them."""

    name: str = ""
    match: str = "all"
    rows: list[Row] = field(default_factory=list)
    name_errors: list[str] = field(default_factory=list)
    match_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Subject:
    """One entry of the field select: a field or an event type."""

    value: str
    label: str
    type: str


@dataclass(frozen=True)
class OpGroup:
    """The operators of one type, an <optgroup> of the operator select."""

    type: str
    label: str
    ops: list[tuple[str, str, str]]  # (op, label, inputs: "value", "days", "count days", "")


# -- subjects and operators ------------------------------------------------------------------


def _offered(session: Session) -> list[tuple[str, BuilderOffer, list[tuple[str, str]]]]:
    """(kind, its offer, its subjects as (value, label)) of every registered kind offered."""
    return [(kind, offer, offer.subjects(session)) for kind, offer in builder_offers().items()]


def _subjects(defs: Definitions) -> dict[str, list[Subject]]:
    builtin: list[Subject] = []
    custom: list[Subject] = []
    for spec in available_fields(defs):
        if spec.custom is not None:
            custom.append(Subject(spec.name, spec.custom.label, spec.type))
        else:
            builtin.append(Subject(spec.name, str(FIELD_LABELS[spec.name]), spec.type))
    events = [
        Subject(EVENT_PREFIX + kind, str(EVENT_LABELS[kind]), "event") for kind in EVENT_TYPES
    ]
    subjects = {
        _("Contact fields"): sorted(builtin, key=lambda s: s.label.casefold()),
        _("Custom fields"): custom,
        _("Behaviour"): events,
    }
    for kind, offer, items in _offered(db_session()):
        subjects[_(offer.heading)] = [
            Subject(kind + KIND_SEPARATOR + value, label, kind) for value, label in items
        ]
    return subjects


def _op_inputs(type_: str, op: str) -> str:
    if type_ == "event":
        return " ".join(EVENT_OPS[op])
    if op in NO_VALUE_OPS:
        return ""
    return "days" if op in DAY_OPS else "value"


def _op_groups() -> list[OpGroup]:
    groups = []
    for type_, ops in OPS_BY_TYPE.items():
        if type_ == "datetime":
            continue  # the same operators as date
        labels = [
            (op, str(DATE_WITHIN_LABEL if op == "within_days" else OP_LABELS[op])) for op in ops
        ]
        groups.append(
            OpGroup(
                type_,
                str(TYPE_LABELS[type_]),
                [(op, label, _op_inputs(type_, op)) for op, label in labels],
            )
        )
    events = [(op, str(label), _op_inputs("event", op)) for op, label in EVENT_OP_LABELS.items()]
    groups.append(OpGroup("event", str(TYPE_LABELS["event"]), events))
    for kind, offer in builder_offers().items():
        groups.append(
            OpGroup(kind, _(offer.heading), [(op, _(label), "") for op, label in offer.ops])
        )
    return groups


def _types(defs: Definitions) -> dict[str, str]:
    """subject → its operator group's type ("datetime" uses the date group)."""
    types = {spec.name: spec.type for spec in available_fields(defs)}
    types = {name: "date" if kind == "datetime" else kind for name, kind in types.items()}
    types |= {EVENT_PREFIX + kind: "event" for kind in EVENT_TYPES}
    for kind, _offer, items in _offered(db_session()):
        types |= {kind + KIND_SEPARATOR + value: kind for value, _label in items}
    return types


# -- form ↔ definition -----------------------------------------------------------------------


def _cut(value: str | None) -> str:
    return (value or "").strip()[:INPUT_MAX]


def _rows_from(form: MultiDict[str, str]) -> list[Row]:
    try:
        count = int(form.get("rows", EMPTY_ROWS))
    except ValueError:
        count = EMPTY_ROWS
    keys = ("group", "subject", "op", "value", "count", "days")
    return [
        Row(**{key: _cut(form.get(f"c{index}_{key}")) for key in keys})
        for index in range(max(0, min(count, MAX_ROWS)))
    ]


def _number_or_text(text: str) -> int | str | None:
    if not text:
        return None
    return int(text) if WHOLE.fullmatch(text) else text


def _condition(row: Row, types: dict[str, str]) -> dict[str, Any]:
    """The JSON condition a row stands for; the service judges whether it makes sense."""
    if row.subject.startswith(EVENT_PREFIX):
        condition: dict[str, Any] = {"event": row.subject.removeprefix(EVENT_PREFIX), "op": row.op}
        for key in EVENT_OPS.get(row.op, ()):
            condition[key] = _number_or_text(getattr(row, key))
        return condition
    registered, separator, value = row.subject.partition(KIND_SEPARATOR)
    if separator and registered in builder_offers():
        return {registered: value, "op": row.op}
    condition = {"field": row.subject, "op": row.op}
    kind = types.get(row.subject)
    if row.op in NO_VALUE_OPS:
        return condition
    if row.op in DAY_OPS:
        condition["value"] = _number_or_text(row.days or row.value)
    elif kind == "enum" and row.op == "in":
        items = [item.strip() for item in row.value.split(",") if item.strip()]
        condition["value"] = items or None
    elif kind == "user":
        condition["value"] = _number_or_text(row.value)
    else:
        condition["value"] = row.value or None
    return condition


def _definition(builder: Builder, types: dict[str, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """The definition of the form's rows, and which row each condition path came from.

    Rows sharing a group become one nested group, combined the other way round from the top
    level ("any" inside "all", "all" inside "any"), where its first row stands.
    """
    inner = "any" if builder.match == "all" else "all"
    conditions: list[dict[str, Any]] = []
    rows_by_path: dict[str, int] = {}
    group_at: dict[str, int] = {}
    for index, row in enumerate(builder.rows):
        if row.blank:
            continue
        condition = _condition(row, types)
        if GROUP.fullmatch(row.group):
            if row.group not in group_at:
                group_at[row.group] = len(conditions)
                conditions.append({inner: []})
            position = group_at[row.group]
            items = conditions[position][inner]
            rows_by_path[f"conditions.{position}.{inner}.{len(items)}"] = index
            items.append(condition)
        else:
            rows_by_path[f"conditions.{len(conditions)}"] = index
            conditions.append(condition)
    return {"match": builder.match, "conditions": conditions}, rows_by_path


def _row_from(condition: dict[str, Any], group: str) -> Row:
    kind = next((key for key in builder_offers() if key in condition), None)
    if kind is not None:
        subject = kind + KIND_SEPARATOR + str(condition[kind])
        return Row(group=group, subject=subject, op=str(condition["op"]))
    if "event" in condition:
        return Row(
            group=group,
            subject=EVENT_PREFIX + str(condition["event"]),
            op=str(condition["op"]),
            count=str(condition.get("count", "")),
            days=str(condition.get("days", "")),
        )
    value = condition.get("value", "")
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if condition["op"] in DAY_OPS:
        return Row(group=group, subject=condition["field"], op=condition["op"], days=text)
    return Row(group=group, subject=str(condition["field"]), op=str(condition["op"]), value=text)


def _builder_from(segment: Segment) -> Builder:
    definition = segment.definition
    match = definition.get("match", "all")
    rows: list[Row] = []
    groups = 0
    for condition in definition.get("conditions", []):
        key = next((k for k in GROUP_KEYS if k in condition), None)
        if key is None:
            rows.append(_row_from(condition, ""))
            continue
        # A group combined like the top level is the same as its rows standing alone.
        group = ""
        if key != match:
            groups += 1
            group = str(groups)
        rows.extend(_row_from(item, group) for item in condition[key])
    return Builder(name=segment.name, match=match, rows=rows)


def _padded(rows: list[Row], extra: int) -> list[Row]:
    return (rows + [Row() for _ in range(extra)])[:MAX_ROWS]


def _translated(message: Message) -> str:
    return _(message.msgid, **message.params)


def _attach(builder: Builder, exc: SegmentError, rows_by_path: dict[str, int]) -> None:
    """Put each message next to the input it concerns: a row, the name, or the whole form."""
    for path, message in exc.messages.items():
        text = _translated(message)
        if path == "name":
            builder.name_errors.append(text)
            continue
        if path == "match":
            builder.match_errors.append(text)
            continue
        row_path = next((p for p in rows_by_path if path == p or path.startswith(p + ".")), None)
        if row_path is None:
            builder.errors.append(text)
            continue
        rest = path.removeprefix(row_path).lstrip(".").split(".")[0]
        label = INPUT_LABELS.get(rest) or (
            INPUT_LABELS["field"] if rest in builder_offers() else None
        )
        builder.rows[rows_by_path[row_path]].errors.append(
            _("%(input)s: %(message)s", input=label, message=text) if label else text
        )


def _submitted(defs: Definitions) -> tuple[Builder, dict[str, Any], dict[str, int]]:
    form = request.form
    match = _cut(form.get("match")) or "all"
    builder = Builder(name=_cut(form.get("name")), match=match, rows=_rows_from(form))
    definition, rows_by_path = _definition(builder, _types(defs))
    return builder, definition, rows_by_path


# -- rendering -------------------------------------------------------------------------------


def _contact_url(contact_id: int) -> str:
    try:
        return url_for("contacts.detail", contact_id=contact_id)
    except BuildError:  # the contact pages live in another module
        return f"/contacts/{contact_id}"


def _contacts_of_segment_url(segment_id: int) -> str | None:
    try:
        return url_for("contacts.list", segment=segment_id)
    except BuildError:
        return None


def _sample_json(contacts: list[Contact]) -> list[dict[str, Any]]:
    return [
        {
            "id": contact.id,
            "email": contact.email,
            "name": " ".join(p for p in (contact.first_name, contact.last_name) if p),
            "url": _contact_url(contact.id),
        }
        for contact in contacts
    ]


def _summary(count: int) -> str:
    return ngettext("%(num)d contact matches now.", "%(num)d contacts match now.", count)


def _reference(defs: Definitions) -> dict[str, list[str]]:
    """Values the enum fields accept, for the help below the form and the value suggestions."""
    values: dict[str, list[str]] = {}
    for spec in available_fields(defs):
        if spec.type == "enum":
            values[spec.name] = list(spec.choices)
    return values


def _owners() -> list[User]:
    return list(db_session().scalars(select(User).order_by(User.name, User.email)))


def _builder_page(
    segment: Segment | None,
    builder: Builder,
    defs: Definitions,
    *,
    status: int = 200,
    found: tuple[int, list[Contact]] | None = None,
) -> ResponseReturnValue:
    page = render_template(
        "contacts/segments_edit.html",
        segment=segment,
        builder=builder,
        subjects=_subjects(defs),
        op_groups=_op_groups(),
        types=_types(defs),
        groups=_group_numbers(builder),
        reference=_reference(defs),
        offer_help=[(_(o.heading), _(o.help)) for o in builder_offers().values() if o.help],
        field_labels=_field_label_map(defs),
        owners=_owners(),
        summary=_summary(found[0]) if found else None,
        sample=_sample_json(found[1]) if found else [],
        max_name=MAX_NAME,
        delete_url=url_for("contacts.segment_delete", segment_id=segment.id) if segment else None,
    )
    return page, status, {"Cache-Control": "no-store"}


def _group_numbers(builder: Builder) -> list[str]:
    used = [int(row.group) for row in builder.rows if GROUP.fullmatch(row.group)]
    return [str(n) for n in range(1, max([MIN_GROUPS, *used]) + 1)]


def _field_label_map(defs: Definitions) -> dict[str, str]:
    labels: dict[str, str] = {}
    for spec in available_fields(defs):
        labels[spec.name] = spec.custom.label if spec.custom else str(FIELD_LABELS[spec.name])
    return labels


def _segment_or_404(segment_id: int) -> Segment:
    segment = get_segment(db_session(), segment_id)
    if segment is None:
        abort(404)
    return segment


# -- views -----------------------------------------------------------------------------------


@bp.get("/contacts/segments", endpoint="segments")
@login_required
def segments() -> ResponseReturnValue:
    session = db_session()
    rows = list_segments(session)
    counted_id = request.args.get("count", type=int)
    counts: dict[int, int | None] = {}
    problems: dict[int, str] = {}
    # One count at a time, on request: a list of fifty segments must not run fifty queries.
    for segment in rows:
        if segment.id != counted_id:
            continue
        try:
            counts[segment.id] = count_matching(session, segment.definition, now=now())
        except SegmentError:
            problems[segment.id] = _("This segment names a field that no longer exists.")
    return render_template(
        "contacts/segments.html",
        segments=rows,
        counts=counts,
        problems=problems,
        can_edit=current_user.has_role(*EDITORS),
        contacts_url=_contacts_of_segment_url,
        conditions=_condition_count,
    )


def _condition_count(segment: Segment) -> int:
    total = 0
    for condition in segment.definition.get("conditions", []):
        key = next((k for k in GROUP_KEYS if k in condition), None)
        total += len(condition[key]) if key else 1
    return total


def _handle_post(segment: Segment | None) -> ResponseReturnValue:
    # Flask-WTF's CSRFProtect has checked the token of this POST already.
    session = db_session()
    defs = definitions(session)
    builder, definition, rows_by_path = _submitted(defs)
    action = request.form.get("action", "save")
    if action == "add":
        builder.rows = _padded(builder.rows, ADD_ROWS)
        return _builder_page(segment, builder, defs)
    if action == "preview":
        try:
            validate_definition(definition, defs, session=session)
        except SegmentError as exc:
            _attach(builder, exc, rows_by_path)
            return _builder_page(segment, builder, defs, status=422)
        found = preview(session, definition, now=now(), limit=SAMPLE_SIZE)
        return _builder_page(segment, builder, defs, found=found)
    try:
        if segment is None:
            segment = create_segment(
                session, name=builder.name, definition=definition, user=me(), now=now()
            )
            message = _("Segment %(name)s created.", name=segment.name)
        else:
            changed = update_segment(
                session, segment, name=builder.name, definition=definition, now=now()
            )
            message = (
                _("Segment %(name)s saved.", name=segment.name)
                if changed
                else _("Nothing changed.")
            )
    except SegmentError as exc:
        session.rollback()  # nothing of a refused save may stay in the session
        _attach(builder, exc, rows_by_path)
        flash(_("The segment was not saved; see the messages below."), "error")
        return _builder_page(segment, builder, defs, status=422)
    session.commit()
    flash(message, "success")
    return redirect(url_for("contacts.segment_edit", segment_id=segment.id))


@bp.route("/contacts/segments/new", methods=["GET", "POST"], endpoint="segment_new")
@roles_required(*EDITORS)
def segment_new() -> ResponseReturnValue:
    if request.method == "POST":
        return _handle_post(None)
    defs = definitions(db_session())
    return _builder_page(None, Builder(rows=_padded([], EMPTY_ROWS)), defs)


@bp.route("/contacts/segments/<int:segment_id>", methods=["GET", "POST"], endpoint="segment_edit")
@roles_required(*EDITORS)
def segment_edit(segment_id: int) -> ResponseReturnValue:
    segment = _segment_or_404(segment_id)
    if request.method == "POST":
        return _handle_post(segment)
    session = db_session()
    defs = definitions(session)
    builder = _builder_from(segment)
    builder.rows = _padded(builder.rows, EMPTY_ROWS)
    found = None
    try:
        found = preview(session, segment.definition, now=now(), limit=SAMPLE_SIZE)
    except SegmentError as exc:
        # A custom field it names was deleted: show which rows need a change.
        _, rows_by_path = _definition(builder, _types(defs))
        _attach(builder, exc, rows_by_path)
    return _builder_page(segment, builder, defs, found=found)


@bp.post("/contacts/segments/preview", endpoint="segment_preview")
@roles_required(*EDITORS)
def segment_preview() -> ResponseReturnValue:
    # CSRF is checked by Flask-WTF for every POST; the builder's token travels in the form.
    session = db_session()
    defs = definitions(session)
    builder, definition, rows_by_path = _submitted(defs)
    try:
        validate_definition(definition, defs, session=session)
    except SegmentError as exc:
        _attach(builder, exc, rows_by_path)
        errors: dict[str, str] = {}
        for index, row in enumerate(builder.rows):
            if row.errors:
                errors[f"row-{index}"] = " ".join(row.errors)
        if builder.match_errors:
            errors["match"] = " ".join(builder.match_errors)
        if builder.errors:
            errors["form"] = " ".join(builder.errors)
        body = {"count": None, "summary": None, "sample": [], "errors": errors}
        return jsonify(body), 422, {"Cache-Control": "no-store"}
    count, sample = preview(session, definition, now=now(), limit=SAMPLE_SIZE)
    body = {
        "count": count,
        "summary": _summary(count),
        "sample": _sample_json(sample),
        "errors": {},
    }
    return jsonify(body), 200, {"Cache-Control": "no-store"}


@bp.route(
    "/contacts/segments/<int:segment_id>/delete",
    methods=["GET", "POST"],
    endpoint="segment_delete",
)
@roles_required(*EDITORS)
def segment_delete(segment_id: int) -> ResponseReturnValue:
    segment = _segment_or_404(segment_id)
    form = EmptyForm()
    if request.method == "GET":
        return render_template("contacts/segments_delete.html", segment=segment, form=form)
    if not form.validate_on_submit():
        abort(400)
    name = segment.name
    delete_segment(db_session(), segment)
    db_session().commit()
    flash(_("Segment %(name)s deleted. Its contacts are unchanged.", name=name), "success")
    return redirect(url_for("contacts.segments"))

"""The contacts list, a contact's page with its timeline, and the edit and new forms."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from nurture.auth.access import login_required, me, roles_required
from nurture.auth.models import Role
from nurture.consent.proof import current_states
from nurture.consent.suppression import SuppressedAddress, refuse_new_suppressed
from nurture.contacts import queries, store
from nurture.contacts.activity import ActivityError, record_activities
from nurture.contacts.context import person_of
from nurture.contacts.custom_fields import Definitions, definitions
from nurture.contacts.editing import ContactExists, create_contact, edit_contact
from nurture.contacts.fields import ContactDataError
from nurture.contacts.forms import (
    ACTIVITY_CHOICES,
    FIELD_LABELS,
    FORMALITY_CHOICES,
    GENDER_CHOICES,
    LANGUAGE_CHOICES,
    LIFECYCLE_LABELS,
    ActivityForm,
    ContactForm,
    contact_form_class,
    initial_data,
    input_name,
    owner_choices,
    submitted_values,
)
from nurture.contacts.models import Contact, Lifecycle
from nurture.contacts.salutation import salutation
from nurture.contacts.ui import bp
from nurture.i18n import translate_error
from nurture.web.context import db_session, now, settings

EDITORS = (Role.ADMIN, Role.MARKETER)
# Sales logs its calls too; it only may not change the contact's data.
LOGGERS = (Role.ADMIN, Role.MARKETER, Role.SALES)
TAG_MAX = 100

SORT_LABELS = {
    "newest": _l("Newest first"),
    "oldest": _l("Oldest first"),
    "last_name": _l("Last name"),
    "company": _l("Company"),
    "updated": _l("Recently updated"),
}
CATEGORY_LABELS = {
    "mails": _l("Mails"),
    "orders": _l("Orders & revenue"),
    "complaints": _l("Complaints & cancellations"),
    "conversations": _l("Calls, meetings & notes"),
    "changes": _l("Data changes & merges"),
}
CHOICE_LABELS = {
    "gender": {c.value: c.label for c in GENDER_CHOICES},
    "formality": {c.value: c.label for c in FORMALITY_CHOICES},
    "language": {c.value: c.label for c in LANGUAGE_CHOICES},
    "activity": {c.value: c.label for c in ACTIVITY_CHOICES},
}
SEVERITY_LABELS = {"low": _l("low"), "medium": _l("medium"), "high": _l("high")}


def _contact_or_404(contact_id: int) -> Contact:
    if contact_id > queries.MAX_ID:
        abort(404)
    contact = db_session().get(Contact, contact_id)
    if contact is None:
        abort(404)
    return contact


def _can_edit() -> bool:
    return bool(current_user.is_authenticated and current_user.has_role(*EDITORS))


# -- list ------------------------------------------------------------------------------------


def _filters() -> queries.ContactFilter:
    args = request.args
    try:
        lifecycle = Lifecycle(args.get("lifecycle", ""))
    except ValueError:
        lifecycle = None
    raw_owner = args.get("owner", "")
    owner: int | Literal["none"] | None = None
    if raw_owner == "none":
        owner = "none"
    elif (owner_id := queries.parse_id(raw_owner)) is not None:
        owner = owner_id
    return queries.ContactFilter(
        search=" ".join(args.get("q", "").split())[: store.SEARCH_MAX],
        lifecycle=lifecycle,
        owner=owner,
        tag=" ".join(args.get("tag", "").split())[:TAG_MAX],
        segment_id=queries.parse_id(args.get("segment")),
    )


def _query_args(filters: queries.ContactFilter, sort: str) -> dict[str, Any]:
    """The list's current filters as URL parameters, for pager and filter links."""
    args: dict[str, Any] = {
        "q": filters.search,
        "lifecycle": filters.lifecycle.value if filters.lifecycle else None,
        "owner": filters.owner,
        "tag": filters.tag,
        "segment": filters.segment_id,
        "sort": sort if sort != queries.DEFAULT_SORT else None,
    }
    return {key: value for key, value in args.items() if value not in (None, "")}


@bp.get("/contacts", endpoint="list")
@login_required
def contact_list() -> ResponseReturnValue:
    session = db_session()
    filters = _filters()
    sort = request.args.get("sort", "")
    sort = sort if sort in queries.SORTS else queries.DEFAULT_SORT
    after, before = request.args.get("after"), request.args.get("before")
    problem = None
    try:
        page = queries.list_page(session, filters, now=now(), sort=sort, after=after, before=before)
        count = queries.count_matching(session, filters, now=now())
    except queries.SegmentUnavailable as exc:
        problem = translate_error(exc)
        page, count = queries.ContactPage([], None, None), 0
    users = queries.all_users(session)
    return render_template(
        "contacts/people_list.html",
        page=page,
        count=count,
        count_cap=queries.COUNT_CAP,
        filters=filters,
        sort=sort,
        paged=bool(after or before),
        args=_query_args(filters, sort),
        problem=problem,
        users=users,
        users_by_id={user.id: user for user in users},
        segments=queries.all_segments(session),
        lifecycles=LIFECYCLE_LABELS,
        sorts=SORT_LABELS,
        can_edit=_can_edit(),
    )


# -- detail ----------------------------------------------------------------------------------


def _http_url(value: str) -> bool:
    """Only web addresses become links: a javascript: or data: "profile" stays text."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _custom_values(contact: Contact, defs: Definitions) -> list[tuple[str, str, Any]]:
    """(label, kind, value) of the defined fields that have a value, in display order."""
    values = contact.custom or {}
    shown: list[tuple[str, str, Any]] = []
    for key, definition in defs.items():
        value = values.get(key)
        if value is None:
            continue
        if definition.kind == "date":
            # Stored as ISO text; shown as a date in the viewer's locale.
            with contextlib.suppress(ValueError):
                value = date.fromisoformat(str(value))
        shown.append((definition.label, definition.kind, value))
    return shown


def _field_labels(defs: Definitions) -> dict[str, Any]:
    return FIELD_LABELS | {f"custom.{key}": d.label for key, d in defs.items()}


def _detail_page(
    contact: Contact, activity_form: ActivityForm, *, status: int = 200
) -> ResponseReturnValue:
    session = db_session()
    category = request.args.get("show")
    category = category if category in queries.TIMELINE_CATEGORIES else None
    before = queries.parse_id(request.args.get("before"))
    defs = definitions(session)
    owner = queries.user_by_id(session, contact.owner_id) if contact.owner_id else None
    profiles = [
        (FIELD_LABELS[name], value, _http_url(value))
        for name in ("website", "linkedin", "xing")
        if (value := getattr(contact, name))
    ]
    page = render_template(
        "contacts/people_detail.html",
        contact=contact,
        greeting=salutation(person_of(contact)),
        owner=owner,
        profiles=profiles,
        custom_values=_custom_values(contact, defs),
        timeline=queries.timeline_page(session, contact.id, category=category, before_id=before),
        category=category,
        before=before,
        categories=CATEGORY_LABELS,
        labels=_field_labels(defs),
        choice_labels=CHOICE_LABELS,
        severities=SEVERITY_LABELS,
        lifecycles=LIFECYCLE_LABELS,
        activity_form=activity_form,
        can_edit=_can_edit(),
        can_log=current_user.has_role(*LOGGERS),
        consent_states=current_states(session, contact.id),
    )
    return page, status


@bp.get("/contacts/<int:contact_id>", endpoint="detail")
@login_required
def contact_detail(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    return _detail_page(contact, ActivityForm(formdata=None))


@bp.post("/contacts/<int:contact_id>/activities", endpoint="log_activity")
@roles_required(*LOGGERS)
def log_activity(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    form = ActivityForm()
    if not form.validate_on_submit():
        return _detail_page(contact, form, status=422)
    user = me()
    item = {"type": form.kind.data, "contact_id": contact.id, "text": form.text.data}
    try:
        record_activities(
            db_session(), [item | {"by": user.email}], now=now(), source=f"user:{user.id}"
        )
    except ActivityError as exc:
        db_session().rollback()
        form.text.errors = [*form.text.errors, translate_error(exc)]
        return _detail_page(contact, form, status=422)
    db_session().commit()
    flash(_("%(what)s logged.", what=CHOICE_LABELS["activity"][form.kind.data]), "success")
    return redirect(url_for("contacts.detail", contact_id=contact.id, _anchor="timeline"))


# -- edit and new ----------------------------------------------------------------------------


def _attach_errors(form: ContactForm, errors: dict[str, str]) -> list[str]:
    """Put each service error at its input; returns those that belong to no input."""
    unplaced = []
    for key, message in sorted(errors.items()):
        name = input_name(key)
        if name in form:
            form[name].errors = [*form[name].errors, message]
        else:
            unplaced.append(f"{key}: {message}")
    return unplaced


def _form_page(
    form: ContactForm,
    contact: Contact | None,
    *,
    status: int = 200,
    problems: list[str] | None = None,
    existing: Contact | None = None,
) -> ResponseReturnValue:
    page = render_template(
        "contacts/people_form.html",
        form=form,
        contact=contact,
        problems=problems or [],
        existing=existing,
    )
    return page, status


def _build_form(contact: Contact | None, defs: Definitions) -> ContactForm:
    form = contact_form_class(defs)(data=initial_data(contact, defs))
    form.owner_id.choices = owner_choices(queries.all_users(db_session()))
    return form


@bp.route("/contacts/new", methods=["GET", "POST"], endpoint="new")
@roles_required(*EDITORS)
def contact_new() -> ResponseReturnValue:
    session = db_session()
    defs = definitions(session)
    form = _build_form(None, defs)
    if request.method == "GET":
        return _form_page(form, None)
    if not form.validate_on_submit():
        return _form_page(form, None, status=422)
    try:
        refuse_new_suppressed(
            session, secret=settings().suppression_secret, email=form.email.data or ""
        )
    except SuppressedAddress as exc:
        form.email.errors = [*form.email.errors, translate_error(exc)]
        return _form_page(form, None, status=422)
    try:
        contact = create_contact(session, submitted_values(form, defs), now=now())
    except ContactExists as exc:
        existing_id = exc.contact.id
        session.rollback()
        form.email.errors = [*form.email.errors, translate_error(exc)]
        return _form_page(form, None, status=422, existing=session.get(Contact, existing_id))
    except ContactDataError as exc:
        session.rollback()
        return _form_page(form, None, status=422, problems=_attach_errors(form, exc.errors))
    session.commit()
    flash(_("Contact %(email)s created.", email=contact.email), "success")
    return redirect(url_for("contacts.detail", contact_id=contact.id))


@bp.route("/contacts/<int:contact_id>/edit", methods=["GET", "POST"], endpoint="edit")
@roles_required(*EDITORS)
def contact_edit(contact_id: int) -> ResponseReturnValue:
    session = db_session()
    contact = _contact_or_404(contact_id)
    defs = definitions(session)
    form = _build_form(contact, defs)
    if request.method == "GET":
        return _form_page(form, contact)
    if not form.validate_on_submit():
        return _form_page(form, contact, status=422)
    try:
        changed = edit_contact(session, contact, submitted_values(form, defs), now=now(), by=me())
    except ContactDataError as exc:
        # The services may have set some values before refusing: none of them may stay.
        session.rollback()
        return _form_page(form, contact, status=422, problems=_attach_errors(form, exc.errors))
    session.commit()
    if changed:
        labels = _field_labels(defs)
        names = ", ".join(str(labels.get(name, name)) for name in changed)
        flash(_("Saved. Changed: %(fields)s.", fields=names), "success")
    else:
        flash(_("Nothing changed."), "info")
    return redirect(url_for("contacts.detail", contact_id=contact.id))

"""Duplicate candidates: the list, the side-by-side comparison, merging and dismissing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import format_date
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from nurture.auth.access import me, roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role, User
from nurture.contacts import duplicates
from nurture.contacts.custom_fields import definitions
from nurture.contacts.merge import FieldComparison, MergeError, compare_fields, merge_contacts
from nurture.contacts.models import Contact
from nurture.contacts.ui import bp
from nurture.i18n import translate_error
from nurture.web.context import db_session, now

EDITORS = (Role.ADMIN, Role.MARKETER)
LIST_LIMIT = 100
SIDES = ("low", "high")

REASON_LABELS = {
    "similar_name": _l("similar name"),
    "same_phone": _l("same phone number"),
    "same_email_local_part": _l("same email address before the @"),
    "same_company": _l("same company"),
    "same_birthday": _l("same birthday"),
    "same_city": _l("same city"),
    "different_birthday": _l("different birthdays"),
    "different_customer_number": _l("different customer numbers"),
}
# Reasons that speak against a pair: shown, but marked as such.
AGAINST = frozenset({"different_birthday", "different_customer_number"})

FIELD_LABELS = {
    "email": _l("Email"),
    "first_name": _l("First name"),
    "last_name": _l("Last name"),
    "title": _l("Title"),
    "gender": _l("Gender"),
    "formality": _l("Form of address"),
    "language": _l("Language"),
    "birthday": _l("Birthday"),
    "company": _l("Company"),
    "industry": _l("Industry"),
    "company_size": _l("Company size"),
    "city": _l("City"),
    "country": _l("Country"),
    "time_zone": _l("Time zone"),
    "phone": _l("Phone"),
    "mobile": _l("Mobile"),
    "website": _l("Website"),
    "linkedin": _l("LinkedIn"),
    "xing": _l("XING"),
    "customer_number": _l("Customer number"),
    "lifecycle": _l("Lifecycle stage"),
    "owner_id": _l("Owner"),
    "source": _l("Source"),
}
VALUE_LABELS = {
    "gender": {
        "female": _l("female"),
        "male": _l("male"),
        "diverse": _l("diverse"),
        "unknown": _l("unknown"),
    },
    "formality": {"formal": _l("formal (Sie)"), "informal": _l("informal (du)")},
    "language": {"de": _l("German"), "en": _l("English")},
    "lifecycle": {
        "lead": _l("lead"),
        "customer": _l("customer"),
        "at_risk": _l("at risk"),
        "churned": _l("churned"),
        "won_back": _l("won back"),
    },
}


@dataclass(frozen=True)
class Row:
    """One line of the comparison: the field's label and both values as text."""

    field: FieldComparison
    label: str
    low: str
    high: str


# -- helpers ---------------------------------------------------------------------------------


def reason_label(code: str) -> str:
    return str(REASON_LABELS.get(code, code))


def display_name(contact: Contact) -> str:
    return " ".join(p for p in (contact.title, contact.first_name, contact.last_name) if p)


def _text(name: str, value: Any, owners: dict[int, str]) -> str:
    if value is None or value == "":
        return ""
    if name == "owner_id":
        return owners.get(value, f"#{value}")
    if isinstance(value, date):
        return format_date(value, "medium")
    key = getattr(value, "value", value)
    labels = VALUE_LABELS.get(name)
    if labels and key in labels:
        return str(labels[key])
    return str(key)


def _rows(low: Contact, high: Contact) -> list[Row]:
    session = db_session()
    fields = compare_fields(low, high)
    owner_ids = {v for f in fields if f.name == "owner_id" for v in (f.low, f.high) if v}
    owners: dict[int, str] = {}
    if owner_ids:
        found = session.execute(select(User.id, User.email).where(User.id.in_(owner_ids)))
        owners = {user_id: email for user_id, email in found}
    custom_labels = {f"custom.{key}": d.label for key, d in definitions(session).items()}
    return [
        Row(
            field=f,
            label=str(FIELD_LABELS.get(f.name) or custom_labels.get(f.name) or f.name),
            low=_text(f.name, f.low, owners),
            high=_text(f.name, f.high, owners),
        )
        for f in fields
    ]


def _pair(low_id: int, high_id: int) -> tuple[Contact, Contact] | None:
    """Both contacts, or None after flashing why not (one was merged or deleted meanwhile)."""
    found = duplicates.contacts_by_id(db_session(), (low_id, high_id))
    if len(found) == 2:
        return found[low_id], found[high_id]
    flash(_("One of these contacts no longer exists; it was probably merged already."), "warning")
    return None


def _check_ids(low_id: int, high_id: int) -> None:
    if low_id >= high_id:
        abort(404)


def _choices(form: MultiDict[str, str], rows: list[FieldComparison], kept: str) -> dict[str, str]:
    """The posted "whose value" radios, from sides (low/high) to merge's keep/merge."""
    choices = {}
    for field in rows:
        side = form.get(f"field-{field.name}")
        if field.choosable and side in SIDES:
            choices[field.name] = "keep" if side == kept else "merge"
    return choices


def contact_url(contact_id: int) -> str:
    return url_for("contacts.detail", contact_id=contact_id)


# -- pages -----------------------------------------------------------------------------------


# endpoint "contacts.duplicates"; the function has another name than the service module.
@bp.get("/contacts/duplicates", endpoint="duplicates")
@roles_required(*EDITORS)
def duplicates_list() -> ResponseReturnValue:
    session = db_session()
    found = duplicates.find_candidates(session, limit=LIST_LIMIT + 1)
    shown = found[:LIST_LIMIT]
    contacts = duplicates.contacts_by_id(session, {i for c in shown for i in (c.low_id, c.high_id)})
    return render_template(
        "contacts/duplicates.html",
        # A contact merged between the search and this query simply drops out.
        candidates=[c for c in shown if c.low_id in contacts and c.high_id in contacts],
        contacts=contacts,
        more=len(found) > LIST_LIMIT,
        limit=LIST_LIMIT,
        min_score=duplicates.DEFAULT_MIN_SCORE,
        reason_label=reason_label,
        against=AGAINST,
        display_name=display_name,
    )


@bp.get("/contacts/duplicates/<int:low_id>/<int:high_id>")
@roles_required(*EDITORS)
def duplicate_pair(low_id: int, high_id: int) -> ResponseReturnValue:
    if low_id > high_id:
        return redirect(url_for("contacts.duplicate_pair", low_id=high_id, high_id=low_id))
    _check_ids(low_id, high_id)
    pair = _pair(low_id, high_id)
    if pair is None:
        return redirect(url_for("contacts.duplicates"))
    low, high = pair
    session = db_session()
    return render_template(
        "contacts/duplicates_pair.html",
        low=low,
        high=high,
        candidate=duplicates.compare(low, high),
        dismissed=duplicates.is_dismissed(session, low.id, high.id),
        rows=_rows(low, high),
        events=duplicates.event_counts(session, (low.id, high.id)),
        form=EmptyForm(),
        reason_label=reason_label,
        against=AGAINST,
        display_name=display_name,
        contact_url=contact_url,
    )


@bp.post("/contacts/duplicates/<int:low_id>/<int:high_id>/merge")
@roles_required(*EDITORS)
def duplicate_merge(low_id: int, high_id: int) -> ResponseReturnValue:
    if not EmptyForm().validate_on_submit():
        abort(400)
    _check_ids(low_id, high_id)
    pair = _pair(low_id, high_id)
    if pair is None:
        return redirect(url_for("contacts.duplicates"))
    low, high = pair
    kept = request.form.get("keep", "low")
    if kept not in SIDES:
        abort(400)
    keep, merge = (low, high) if kept == "low" else (high, low)
    choices = _choices(request.form, compare_fields(low, high), kept)
    merged_name = display_name(merge) or merge.email
    try:
        merge_contacts(db_session(), keep=keep, merge=merge, choices=choices, user=me(), now=now())
    except MergeError as exc:
        db_session().rollback()
        flash(translate_error(exc), "error")
        # Back to the comparison, unless the refusal was that one of them is gone meanwhile.
        if len(duplicates.contacts_by_id(db_session(), (low_id, high_id))) == 2:
            return redirect(url_for("contacts.duplicate_pair", low_id=low_id, high_id=high_id))
        return redirect(url_for("contacts.duplicates"))
    db_session().commit()
    flash(
        _(
            "%(merged)s was merged into this contact; the history of both is here now.",
            merged=merged_name,
        ),
        "success",
    )
    return redirect(contact_url(keep.id))


@bp.post("/contacts/duplicates/<int:low_id>/<int:high_id>/dismiss")
@roles_required(*EDITORS)
def duplicate_dismiss(low_id: int, high_id: int) -> ResponseReturnValue:
    if not EmptyForm().validate_on_submit():
        abort(400)
    _check_ids(low_id, high_id)
    pair = _pair(low_id, high_id)
    if pair is None:
        return redirect(url_for("contacts.duplicates"))
    low, high = pair
    duplicates.dismiss(db_session(), low.id, high.id, user=me(), now=now())
    db_session().commit()
    flash(
        _(
            "Noted: %(a)s and %(b)s are different people; this pair will not be suggested again.",
            a=display_name(low) or low.email,
            b=display_name(high) or high.email,
        ),
        "success",
    )
    return redirect(url_for("contacts.duplicates"))

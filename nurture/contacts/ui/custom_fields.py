"""Settings → Custom fields: list, add, edit and delete the typed fields of contacts (admins)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from nurture.auth.access import roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role
from nurture.contacts.custom_fields import (
    MAX_LABEL,
    CustomFieldError,
    choice_usage,
    create_field,
    definitions,
    delete_field,
    update_field,
    values_in_use,
    values_in_use_by_key,
)
from nurture.contacts.models import CUSTOM_FIELD_KINDS, CustomField
from nurture.contacts.ui import bp
from nurture.i18n import translate_error
from nurture.web.context import db_session, now

KIND_LABELS = {
    "text": _l("Text"),
    "number": _l("Number"),
    "date": _l("Date"),
    "choice": _l("Choice"),
}
assert set(KIND_LABELS) == set(CUSTOM_FIELD_KINDS)
# The service enforces the real limits (100 choices of 100 characters); this only keeps a
# pasted novel out of the request.
CHOICES_MAX = 20_000


class FieldEditForm(FlaskForm):
    """What can change once a field exists: the label and, for a choice field, the choices."""

    label = StringField(_l("Label"), validators=[DataRequired(), Length(max=MAX_LABEL)])
    choices = TextAreaField(_l("Choices"), validators=[Optional(), Length(max=CHOICES_MAX)])


class FieldCreateForm(FieldEditForm):
    key = StringField(_l("Key"), validators=[DataRequired(), Length(max=40)])
    kind = SelectField(
        _l("Type"),
        choices=[SelectChoice(kind, label) for kind, label in KIND_LABELS.items()],
        default="text",
    )


def _choice_lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()]


def _field_or_404(field_id: int) -> CustomField:
    field = db_session().get(CustomField, field_id)
    if field is None:
        abort(404)
    return field


def _refuse(form: FlaskForm, exc: CustomFieldError) -> str:
    """The translated message, also attached to the input it concerns."""
    db_session().rollback()  # nothing of a refused change may stay in the session
    message = translate_error(exc)
    if exc.field and exc.field in form:
        form[exc.field].errors = [*form[exc.field].errors, message]
    flash(message, "error")
    return message


def _list_page(form: FieldCreateForm, status: int = 200) -> ResponseReturnValue:
    fields = list(definitions(db_session()).values())
    usage = values_in_use_by_key(db_session(), [field.key for field in fields])
    page = render_template(
        "contacts/custom_fields.html",
        fields=fields,
        usage=usage,
        form=form,
        kind_labels=KIND_LABELS,
    )
    return page, status


@bp.route("/settings/custom-fields", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def custom_fields() -> ResponseReturnValue:
    form = FieldCreateForm()
    if request.method == "GET":
        return _list_page(form)
    if not form.validate_on_submit():
        return _list_page(form, 422)
    try:
        field = create_field(
            db_session(),
            key=form.key.data or "",
            label=form.label.data or "",
            kind=form.kind.data or "",
            choices=_choice_lines(form.choices.data),
            now=now(),
        )
    except CustomFieldError as exc:
        _refuse(form, exc)
        return _list_page(form, 422)
    db_session().commit()
    flash(_("Custom field %(label)s (%(key)s) added.", label=field.label, key=field.key), "success")
    return redirect(url_for("contacts.custom_fields"))


def _edit_page(field: CustomField, form: FieldEditForm, status: int = 200) -> ResponseReturnValue:
    page = render_template(
        "contacts/custom_fields_edit.html",
        field=field,
        form=form,
        kind_labels=KIND_LABELS,
        in_use=values_in_use(db_session(), field.key),
        choice_usage=choice_usage(db_session(), field),
    )
    return page, status


@bp.route("/settings/custom-fields/<int:field_id>", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def custom_field_edit(field_id: int) -> ResponseReturnValue:
    field = _field_or_404(field_id)
    if request.method == "GET":
        data = {"label": field.label, "choices": "\n".join(field.choices)}
        return _edit_page(field, FieldEditForm(formdata=None, data=data))
    form = FieldEditForm()
    if not form.validate_on_submit():
        return _edit_page(field, form, 422)
    try:
        update_field(
            db_session(),
            field,
            label=form.label.data or "",
            choices=_choice_lines(form.choices.data),
        )
    except CustomFieldError as exc:
        # The rollback expires the field: the page shows what is stored, the form what was sent.
        _refuse(form, exc)
        return _edit_page(field, form, 422)
    db_session().commit()
    flash(_("Custom field %(key)s saved.", key=field.key), "success")
    return redirect(url_for("contacts.custom_fields"))


@bp.route("/settings/custom-fields/<int:field_id>/delete", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def custom_field_delete(field_id: int) -> ResponseReturnValue:
    # A page of its own asks for confirmation, so deleting needs no JavaScript dialog.
    field = _field_or_404(field_id)
    form = EmptyForm()
    status = 200
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        key = field.key
        try:
            delete_field(db_session(), field)
        except CustomFieldError as exc:
            _refuse(form, exc)
            status = 422
        else:
            db_session().commit()
            flash(_("Custom field %(key)s deleted.", key=key), "success")
            return redirect(url_for("contacts.custom_fields"))
    page = render_template(
        "contacts/custom_fields_delete.html",
        field=field,
        form=form,
        kind_labels=KIND_LABELS,
        in_use=values_in_use(db_session(), field.key),
    )
    return page, status

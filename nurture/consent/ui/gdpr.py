"""A contact's consent proof (printable), the GDPR export download and erasure with confirmation."""

from __future__ import annotations

import json

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from nurture.auth.access import login_required, me, roles_required
from nurture.auth.models import Role
from nurture.consent.gdpr import erase_contact, export_contact
from nurture.consent.proof import proof_of
from nurture.consent.ui import bp
from nurture.contacts.fields import normalise_email
from nurture.contacts.models import Contact
from nurture.contacts.queries import MAX_ID
from nurture.web.context import db_session, now, settings

EXPORTERS = (Role.ADMIN, Role.MARKETER)


class EraseForm(FlaskForm):
    email = StringField(
        _l("Type the contact's email address to confirm"),
        validators=[DataRequired(), Length(max=320)],
    )


def _contact_or_404(contact_id: int) -> Contact:
    contact = db_session().get(Contact, contact_id) if contact_id <= MAX_ID else None
    if contact is None:
        abort(404)
    return contact


def _same_address(typed: str, email: str) -> bool:
    try:
        return normalise_email(typed) == email
    except ValueError:
        return False


@bp.get("/contacts/<int:contact_id>/consent-proof", endpoint="proof")
@login_required
def proof(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    page = render_template(
        "consent/admin_proof.html",
        proof=proof_of(db_session(), contact, secret=settings().suppression_secret),
        generated_at=now(),
        generated_by=me(),
    )
    return page, 200, {"Cache-Control": "no-store"}


@bp.get("/contacts/<int:contact_id>/export", endpoint="export")
@roles_required(*EXPORTERS)
def export(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    config = settings()
    document = export_contact(
        db_session(),
        contact,
        secret=config.suppression_secret,
        mail_domain=config.mail_domain,
        now=now(),
    )
    body = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False)
    return Response(
        body + "\n",
        mimetype="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="contact-{contact.id}-export.json"',
            "Cache-Control": "no-store",
        },
    )


def _erase_page(contact: Contact, form: EraseForm, status: int = 200) -> ResponseReturnValue:
    return render_template("consent/admin_erase.html", contact=contact, form=form), status


@bp.route("/contacts/<int:contact_id>/erase", methods=["GET", "POST"], endpoint="erase")
@roles_required(Role.ADMIN)
def erase(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    form = EraseForm()
    if request.method == "GET":
        return _erase_page(contact, form)
    if not form.validate_on_submit():
        return _erase_page(contact, form, 422)
    if not _same_address(form.email.data or "", contact.email):
        form.email.errors = [
            *form.email.errors,
            _("That is not this contact's email address; nothing was erased."),
        ]
        return _erase_page(contact, form, 422)
    user = me()
    erasure = erase_contact(
        db_session(),
        contact,
        secret=settings().suppression_secret,
        by=user,
        source=f"user:{user.id}",
        now=now(),
    )
    db_session().commit()
    flash(
        _(
            "Contact %(id)s was erased. Its address is on the suppression list and cannot be "
            "added again.",
            id=erasure.contact_id,
        ),
        "success",
    )
    return redirect(url_for("contacts.list"))

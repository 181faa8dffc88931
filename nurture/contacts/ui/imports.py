"""The import wizard: upload a CSV, map its columns, watch the worker import it, read the report."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectChoice, SelectField

from nurture.auth.access import me, roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role
from nurture.consent.imported import BERLIN, ConsentProof, parse_proof
from nurture.consent.models import TopicKind
from nurture.consent.topics import list_topics
from nurture.contacts import import_jobs
from nurture.contacts.custom_fields import definitions
from nurture.contacts.fields import LANGUAGES
from nurture.contacts.importer import ImportFileError
from nurture.contacts.models import ImportJob
from nurture.contacts.ui import bp
from nurture.i18n import translate_error
from nurture.web.context import db_session, now

EDITORS = (Role.ADMIN, Role.MARKETER)
ERRORS_SHOWN = 100
KIND_LABELS = {"contacts": _l("Contacts"), "events": _l("Business events (orders, complaints, …)")}
# What the mapping page's selects call the targets; custom fields bring their own labels.
FIELD_LABELS = {
    "email": _l("Email address"),
    "first_name": _l("First name"),
    "last_name": _l("Last name"),
    "gender": _l("Gender (Herr/Frau/divers)"),
    "title": _l("Title"),
    "formality": _l("Form of address (Sie/Du)"),
    "language": _l("Language"),
    "time_zone": _l("Time zone"),
    "birthday": _l("Birthday"),
    "company": _l("Company"),
    "industry": _l("Industry"),
    "company_size": _l("Company size"),
    "city": _l("City"),
    "country": _l("Country"),
    "customer_number": _l("Customer number"),
    "phone": _l("Phone"),
    "mobile": _l("Mobile"),
    "website": _l("Website"),
    "linkedin": _l("LinkedIn"),
    "xing": _l("XING"),
    "tags": _l("Tags"),
    "lifecycle": _l("Lifecycle"),
    "type": _l("Event type (Bestellung, Beschwerde, Kündigung, …)"),
    "occurred_at": _l("Date and time (DD.MM.YYYY HH:MM, Berlin time)"),
    "id": _l("Your event id (makes re-imports safe)"),
    "amount": _l("Amount"),
    "currency": _l("Currency"),
    "order_id": _l("Order number"),
    "reason": _l("Reason"),
    "severity": _l("Severity (low/medium/high)"),
    "product": _l("Product"),
    "period": _l("Period"),
    "text": _l("Text"),
    "by": _l("By (who called or wrote it)"),
    "consent": _l("Consent given (ja/nein); needs the proof below"),
}
LANGUAGE_LABELS = {"de": _l("German"), "en": _l("English")}
NO_CONSENT: dict[str, Any] = {
    "topics": [],
    "source": "",
    "date": "",
    "text": "",
    "language": "de",
    "all_rows": False,
}


class UploadForm(FlaskForm):
    file = FileField(_l("CSV file"), validators=[FileRequired(_l("Choose a CSV file."))])
    kind = SelectField(
        _l("What the file holds"),
        choices=[SelectChoice(kind, label) for kind, label in KIND_LABELS.items()],
        default="contacts",
    )


def _job_or_404(job_id: int, *, with_file: bool = False) -> ImportJob:
    job = import_jobs.get_job(db_session(), job_id, with_file=with_file)
    if job is None:
        abort(404)
    return job


def _list_page(form: UploadForm, *, status: int = 200, error: str | None = None) -> Any:
    page = render_template(
        "contacts/imports_list.html",
        form=form,
        error=error,
        jobs=import_jobs.recent_jobs(db_session()),
        kind_labels=KIND_LABELS,
    )
    return page, status


@bp.route("/contacts/imports", methods=["GET", "POST"])
@roles_required(*EDITORS)
def imports() -> ResponseReturnValue:
    form = UploadForm()
    if request.method == "GET":
        return _list_page(form)
    if not form.validate_on_submit():
        return _list_page(form, status=422)
    upload = form.file.data
    try:
        job = import_jobs.create_job(
            db_session(),
            kind=form.kind.data or "contacts",
            filename=upload.filename or "",
            data=upload.read(),
            user=me(),
            now=now(),
        )
    except ImportFileError as exc:
        db_session().rollback()
        message = translate_error(exc)
        form.file.errors = [*form.file.errors, message]
        return _list_page(form, status=422, error=message)
    db_session().commit()
    return redirect(url_for("contacts.import_map", job_id=job.id))


def _targets(kind: str) -> list[tuple[str, str]]:
    custom = definitions(db_session())
    labels = {f"custom.{key}": field.label for key, field in custom.items()}
    return [
        (target, str(labels.get(target) or FIELD_LABELS.get(target, target)))
        for target in import_jobs.target_fields(kind, custom)
    ]


def _consent_input() -> dict[str, Any]:
    """What the mapping form's consent section holds, as entered."""
    form = request.form
    return {
        "topics": form.getlist("consent_topics"),
        "source": form.get("consent_source", ""),
        "date": form.get("consent_date", ""),
        "text": form.get("consent_text", ""),
        "language": form.get("consent_language", "de"),
        "all_rows": bool(form.get("consent_all_rows")),
    }


def _declared_proof(entered: dict[str, Any]) -> ConsentProof | None:
    """The proof the section declares; None when it was left empty (no consent comes along)."""
    if not any(entered[name] for name in ("topics", "source", "date", "text", "all_rows")):
        return None
    return parse_proof(
        topics=entered["topics"],
        source=entered["source"],
        collected_on=entered["date"],
        text=entered["text"],
        language=entered["language"],
        all_rows=entered["all_rows"],
    )


@bp.route("/contacts/imports/<int:job_id>/map", methods=["GET", "POST"])
@roles_required(*EDITORS)
def import_map(job_id: int) -> ResponseReturnValue:
    job = _job_or_404(job_id, with_file=True)
    if not import_jobs.awaiting_mapping(job):
        return redirect(url_for("contacts.import_detail", job_id=job.id))
    form = EmptyForm()
    header, samples = import_jobs.preview(job)
    custom = definitions(db_session())
    error = None
    error_field = None
    status = 200
    consent = NO_CONSENT
    if request.method == "GET":
        chosen = import_jobs.suggested_mapping(job, custom)
    elif not form.validate_on_submit():
        abort(400)
    else:
        # Columns are addressed by position: a header may hold any characters.
        chosen = {
            column: request.form.get(f"column-{index}", "")
            for index, column in enumerate(header)
            if column
        }
        consent = _consent_input() if job.kind == "contacts" else NO_CONSENT
        try:
            import_jobs.set_mapping(
                db_session(),
                job,
                chosen,
                custom,
                proof=_declared_proof(consent),
                declared_by=f"user:{me().id}",
                now=now(),
            )
        except ImportFileError as exc:
            db_session().rollback()
            error, status = translate_error(exc), 422
            error_field = getattr(exc, "field", None)
        else:
            db_session().commit()
            flash(_("The import is queued; the worker starts it within seconds."), "success")
            return redirect(url_for("contacts.import_detail", job_id=job.id))
    page = render_template(
        "contacts/imports_map.html",
        job=job,
        form=form,
        header=header,
        samples=samples,
        chosen=chosen,
        targets=_targets(job.kind),
        error=error,
        error_field=error_field,
        kind_labels=KIND_LABELS,
        consent=consent,
        consent_topics=[t for t in list_topics(db_session()) if t.kind is TopicKind.MARKETING],
        languages=[(code, str(LANGUAGE_LABELS.get(code, code))) for code in LANGUAGES],
        today=now().astimezone(BERLIN).date().isoformat(),
    )
    return page, status


@bp.get("/contacts/imports/<int:job_id>")
@roles_required(*EDITORS)
def import_detail(job_id: int) -> ResponseReturnValue:
    job = _job_or_404(job_id)
    if import_jobs.awaiting_mapping(job):
        return redirect(url_for("contacts.import_map", job_id=job.id))
    progress = import_jobs.progress(db_session(), job.id)
    return render_template(
        "contacts/imports_detail.html",
        job=job,
        progress=progress,
        errors=import_jobs.error_rows(job, limit=ERRORS_SHOWN) if job.state == "done" else [],
        errors_shown=ERRORS_SHOWN,
        kind_labels=KIND_LABELS,
        # Problems are stored in English; those without parameters are msgids and translate.
        problem=_(job.problem) if job.problem else "",
        consent_proof=import_jobs.consent_of(job),
        consent_outcome=import_jobs.consent_outcome(job),
    )


@bp.get("/contacts/imports/<int:job_id>/progress.json")
@roles_required(*EDITORS)
def import_progress(job_id: int) -> ResponseReturnValue:
    progress = import_jobs.progress(db_session(), job_id)
    if progress is None:
        abort(404)
    response = jsonify(progress)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/contacts/imports/<int:job_id>/errors.csv")
@roles_required(*EDITORS)
def import_errors(job_id: int) -> ResponseReturnValue:
    job = _job_or_404(job_id)
    if job.state != "done":
        abort(404)
    return Response(
        job.errors_csv,
        mimetype="text/csv",
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f"attachment; filename=import-{job.id}-errors.csv",
            "Cache-Control": "no-store",
        },
    )

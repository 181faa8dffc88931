"""/api/v1/contacts: upsert, read, list and change contacts."""

from __future__ import annotations

import json
from typing import Any

from flask import jsonify, request, url_for
from flask.typing import ResponseReturnValue

from nurture.api import bp
from nurture.api.auth import api_user, json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.consent.imported import ConsentProof, ConsentProofError, consent_import, parse_proof
from nurture.consent.suppression import SuppressedAddress, refuse_new_suppressed
from nurture.contacts.activity import ActivityError, record_activities, timeline
from nurture.contacts.activity_import import import_activities
from nurture.contacts.fields import ContactDataError
from nurture.contacts.importer import ImportFileError, ImportReport, import_contacts
from nurture.contacts.models import Contact, Lifecycle
from nurture.contacts.store import find_by_email, list_contacts, update_contact, upsert_contact
from nurture.events import Event
from nurture.web.context import db_session, now, settings

WRITERS = (Role.ADMIN, Role.MARKETER)
FIELDS = (
    "email",
    "first_name",
    "last_name",
    "gender",
    "title",
    "formality",
    "language",
    "time_zone",
    "company",
    "industry",
    "company_size",
    "city",
    "country",
    "customer_number",
    "phone",
    "mobile",
    "website",
    "linkedin",
    "xing",
    "tags",
    "custom",
    "owner_id",
    "source",
)


def contact_json(contact: Contact) -> dict[str, Any]:
    body: dict[str, Any] = {"id": contact.id}
    body |= {field: getattr(contact, field) for field in FIELDS}
    body["lifecycle"] = contact.lifecycle.value
    body["birthday"] = contact.birthday.isoformat() if contact.birthday else None
    body["created_at"] = contact.created_at.isoformat()
    body["updated_at"] = contact.updated_at.isoformat()
    return body


def _invalid(exc: ContactDataError) -> ApiError:
    return ApiError(422, "validation_error", "Some fields are invalid.", exc.errors)


def _contact_or_404(contact_id: int) -> Contact:
    contact = db_session().get(Contact, contact_id)
    if contact is None:
        raise ApiError(404, "not_found", f"There is no contact with id {contact_id}.")
    return contact


@bp.post("/contacts")
@token_required(*WRITERS)
def contacts_upsert() -> ResponseReturnValue:
    body = json_body()
    source = body.pop("source", None) or "api"
    try:
        if isinstance(body.get("email"), str):
            number = body.get("customer_number")
            refuse_new_suppressed(
                db_session(),
                secret=settings().suppression_secret,
                email=body["email"],
                customer_number=number if isinstance(number, str) else None,
            )
        contact, created = upsert_contact(db_session(), body, now=now(), source=str(source))
    except SuppressedAddress as exc:
        raise ApiError(422, "suppressed", str(exc), {"email": str(exc)}) from None
    except ContactDataError as exc:
        raise _invalid(exc) from None
    db_session().commit()
    location = url_for("api.contacts_get", contact_id=contact.id)
    return jsonify(contact_json(contact)), 201 if created else 200, {"Location": location}


def _import_upload() -> tuple[bytes, dict[str, str] | None]:
    """The CSV bytes and the optional mapping of a multipart or text/csv request."""
    if request.mimetype == "text/csv":
        return request.get_data(), None
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "Send the file as multipart/form-data or text/csv."
        )
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "missing_file", "Send the CSV file in the form field 'file'.")
    mapping = None
    if request.form.get("mapping"):
        try:
            mapping = json.loads(request.form["mapping"])
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ApiError(
                400, "invalid_mapping", "mapping must be a JSON object of column to field."
            )
    return upload.read(), mapping


CONSENT_FIELDS = ("consent_topics", "consent_source", "consent_date", "consent_text")
TRUE = ("1", "true", "yes", "on")


def _consent_proof() -> ConsentProof | None:
    """The proof reference of a multipart import; None when no consent_* field is sent."""
    form = request.form if request.mimetype == "multipart/form-data" else {}
    all_rows = form.get("consent_all_rows", "").strip().lower() in TRUE
    if not any(form.get(name, "").strip() for name in CONSENT_FIELDS) and not all_rows:
        return None
    return parse_proof(
        topics=form.get("consent_topics", ""),
        source=form.get("consent_source", ""),
        collected_on=form.get("consent_date", ""),
        text=form.get("consent_text", ""),
        language=form.get("consent_language", "de"),
        all_rows=all_rows,
    )


@bp.post("/contacts/import")
@token_required(*WRITERS)
def contacts_import() -> ResponseReturnValue:
    data, mapping = _import_upload()
    upload = request.files.get("file")
    name = (upload.filename if upload is not None else None) or "upload.csv"
    try:
        proof = _consent_proof()
        extension = consent_import(
            db_session(),
            proof,
            reference=name,
            file=name,
            now=now(),
            declared_by=f"user:{api_user().id}",
        )
        report = import_contacts(
            db_session(),
            data,
            mapping=mapping,
            now=now(),
            source="import",
            suppression_secret=settings().suppression_secret,
            extension=extension,
        )
    except ConsentProofError as exc:
        details = {exc.field: str(exc)} if exc.field else {}
        raise ApiError(422, "invalid_consent_proof", str(exc), details) from None
    except ImportFileError as exc:
        raise ApiError(422, "invalid_file", str(exc)) from None
    db_session().commit()
    body = _report_json(report)
    body |= {
        "consents_imported": report.consents_imported,
        "consents_skipped": report.consents_skipped,
        "notes": [{"line": n.line, "message": n.message} for n in report.notes],
    }
    return jsonify(body)


def _report_json(report: ImportReport) -> dict[str, Any]:
    return {
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "ignored_columns": report.ignored_columns,
        "errors": [{"line": e.line, "field": e.field, "message": e.message} for e in report.errors],
    }


@bp.post("/events/import")
@token_required(*WRITERS)
def events_import() -> ResponseReturnValue:
    data, mapping = _import_upload()
    try:
        # The same source as the wizard and the CLI: one file's ids dedupe across all three.
        report = import_activities(db_session(), data, mapping=mapping, now=now(), source="import")
    except ImportFileError as exc:
        raise ApiError(422, "invalid_file", str(exc)) from None
    db_session().commit()
    return jsonify(_report_json(report))


@bp.get("/contacts")
@token_required()
def contacts_list() -> ResponseReturnValue:
    args = request.args
    if "email" in args:
        found = find_by_email(db_session(), args["email"])
        return jsonify({"items": [contact_json(found)] if found else [], "next_after": None})
    try:
        limit = min(max(int(args.get("limit", 50)), 1), 500)
        after = int(args["after"]) if "after" in args else None
        lifecycle = Lifecycle(args["lifecycle"]) if "lifecycle" in args else None
    except ValueError:
        raise ApiError(
            400,
            "invalid_query",
            "limit and after must be numbers; lifecycle one of "
            + ", ".join(m.value for m in Lifecycle)
            + ".",
        ) from None
    items = list_contacts(
        db_session(), after_id=after, limit=limit, lifecycle=lifecycle, search=args.get("q")
    )
    next_after = items[-1].id if len(items) == limit else None
    return jsonify({"items": [contact_json(c) for c in items], "next_after": next_after})


@bp.get("/contacts/<int:contact_id>")
@token_required()
def contacts_get(contact_id: int) -> ResponseReturnValue:
    return jsonify(contact_json(_contact_or_404(contact_id)))


@bp.patch("/contacts/<int:contact_id>")
@token_required(*WRITERS)
def contacts_patch(contact_id: int) -> ResponseReturnValue:
    contact = _contact_or_404(contact_id)
    try:
        update_contact(db_session(), contact, json_body(), now=now())
    except ContactDataError as exc:
        raise _invalid(exc) from None
    db_session().commit()
    return jsonify(contact_json(contact))


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "contact_id": event.contact_id,
        "message_id": event.message_id,
        "occurred_at": event.occurred_at.isoformat(),
        "payload": event.payload,
    }


@bp.post("/events")
@token_required(*WRITERS)
def events_record() -> ResponseReturnValue:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    body = request.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        items = body["events"]
    elif isinstance(body, dict):
        items = [body]
    else:
        raise ApiError(
            400, "invalid_json", 'Send one event object or {"events": [...]} as valid JSON.'
        )
    if not 1 <= len(items) <= 1000:
        raise ApiError(422, "validation_error", "Send 1 to 1000 events at once.")
    try:
        ids = record_activities(db_session(), items, now=now(), source="api")
    except ActivityError as exc:
        raise ApiError(
            422, "validation_error", "Some events are invalid; none was recorded.", exc.errors
        ) from None
    db_session().commit()
    recorded = sum(1 for i in ids if i is not None)
    status = 201 if recorded else 200
    return jsonify({"recorded": recorded, "duplicates": len(ids) - recorded, "ids": ids}), status


@bp.get("/contacts/<int:contact_id>/timeline")
@token_required()
def contacts_timeline(contact_id: int) -> ResponseReturnValue:
    _contact_or_404(contact_id)
    args = request.args
    try:
        limit = min(max(int(args.get("limit", 50)), 1), 500)
        before = int(args["before"]) if "before" in args else None
    except ValueError:
        raise ApiError(400, "invalid_query", "limit and before must be numbers.") from None
    types = [t for t in args.get("type", "").split(",") if t] or None
    events = timeline(db_session(), contact_id, types=types, before_id=before, limit=limit)
    next_before = events[-1].id if len(events) == limit else None
    return jsonify({"items": [event_json(e) for e in events], "next_before": next_before})

"""/api/v1/segments: saved filters over contacts, their counts and their members."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request, url_for
from flask.typing import ResponseReturnValue

from nurture.api import bp
from nurture.api.auth import api_user, json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.contacts.models import Segment
from nurture.contacts.segments import (
    SegmentError,
    count_matching,
    create_segment,
    delete_segment,
    get_segment,
    list_matching,
    list_segments,
    update_segment,
)
from nurture.web.context import db_session, now

WRITERS = (Role.ADMIN, Role.MARKETER)
INPUT_KEYS = ("name", "definition")


def segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "name": segment.name,
        "definition": segment.definition,
        "created_by_id": segment.created_by_id,
        "created_at": segment.created_at.isoformat(),
        "updated_at": segment.updated_at.isoformat(),
    }


def _with_count(segment: Segment) -> dict[str, Any]:
    """The segment with how many contacts match now; a definition gone stale says why."""
    body = segment_json(segment)
    try:
        body["count"] = count_matching(db_session(), segment.definition, now=now())
    except SegmentError as exc:
        body["count"] = None
        body["errors"] = exc.errors
    return body


def _segment_or_404(segment_id: int) -> Segment:
    segment = get_segment(db_session(), segment_id)
    if segment is None:
        raise ApiError(404, "not_found", f"There is no segment with id {segment_id}.")
    return segment


def _input() -> dict[str, Any]:
    body = json_body()
    unknown = {key: "is not allowed here" for key in body if key not in INPUT_KEYS}
    missing = {key: "is required" for key in INPUT_KEYS if key not in body}
    if unknown or missing:
        raise ApiError(422, "validation_error", "Some fields are invalid.", unknown | missing)
    return body


def _invalid(exc: SegmentError) -> ApiError:
    return ApiError(422, "validation_error", "The segment is invalid.", exc.errors)


@bp.get("/segments")
@token_required()
def segments_list() -> ResponseReturnValue:
    # A count per row would run every segment's query; only on request.
    counted = request.args.get("count") in ("1", "true")
    items = [_with_count(s) if counted else segment_json(s) for s in list_segments(db_session())]
    return jsonify({"items": items})


@bp.post("/segments")
@token_required(*WRITERS)
def segments_create() -> ResponseReturnValue:
    body = _input()
    try:
        segment = create_segment(
            db_session(),
            name=body["name"],
            definition=body["definition"],
            user=api_user(),
            now=now(),
        )
    except SegmentError as exc:
        raise _invalid(exc) from None
    db_session().commit()
    location = url_for("api.segments_get", segment_id=segment.id)
    return jsonify(_with_count(segment)), 201, {"Location": location}


@bp.get("/segments/<int:segment_id>")
@token_required()
def segments_get(segment_id: int) -> ResponseReturnValue:
    return jsonify(_with_count(_segment_or_404(segment_id)))


@bp.put("/segments/<int:segment_id>")
@token_required(*WRITERS)
def segments_update(segment_id: int) -> ResponseReturnValue:
    segment = _segment_or_404(segment_id)
    body = _input()
    try:
        update_segment(
            db_session(), segment, name=body["name"], definition=body["definition"], now=now()
        )
    except SegmentError as exc:
        raise _invalid(exc) from None
    db_session().commit()
    return jsonify(_with_count(segment))


@bp.delete("/segments/<int:segment_id>")
@token_required(*WRITERS)
def segments_delete(segment_id: int) -> ResponseReturnValue:
    delete_segment(db_session(), _segment_or_404(segment_id))
    db_session().commit()
    return "", 204


@bp.get("/segments/<int:segment_id>/contacts")
@token_required()
def segments_contacts(segment_id: int) -> ResponseReturnValue:
    segment = _segment_or_404(segment_id)
    args = request.args
    try:
        limit = min(max(int(args.get("limit", 100)), 1), 1000)
        after = int(args["after"]) if "after" in args else None
    except ValueError:
        raise ApiError(400, "invalid_query", "limit and after must be numbers.") from None
    try:
        rows = list_matching(
            db_session(), segment.definition, now=now(), after_id=after, limit=limit
        )
    except SegmentError as exc:
        raise ApiError(
            409,
            "segment_invalid",
            "The segment's definition is no longer valid; change it first.",
            exc.errors,
        ) from None
    next_after = rows[-1][0] if len(rows) == limit else None
    return jsonify(
        {
            "items": [{"id": contact_id, "email": email} for contact_id, email in rows],
            "next_after": next_after,
        }
    )

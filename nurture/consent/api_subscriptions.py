"""POST /api/v1/subscriptions: a sign-up from the customer's own website, as double opt-in."""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import g, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from nurture.api import bp
from nurture.api.auth import json_body, token_required
from nurture.api.errors import ApiError
from nurture.auth.models import Role
from nurture.consent.ledger import ConsentError, Origin
from nurture.consent.models import ConsentRequest, Topic
from nurture.consent.optin import (
    SIGNUP_FIELDS,
    SuppressedAddress,
    all_granted,
    request_optin,
    wanted_topics,
)
from nurture.consent.signup_forms import RateLimited, limit_ip
from nurture.contacts.fields import ContactDataError, normalise_email
from nurture.contacts.store import find_by_email
from nurture.web.context import db_session, now, settings

MAX_SOURCE = 100
MAX_TEXT = 20_000
KNOWN = frozenset({"email", "topics", "consent_text", "source", "ip", "user_agent", "tracking"})


def _check(body: dict[str, Any]) -> tuple[list[Topic], dict[str, str]]:
    """The requested topics and every field error at once."""
    errors: dict[str, str] = {}
    for key in body:
        if key not in KNOWN and key not in SIGNUP_FIELDS:
            errors[key] = "is not a field of a subscription"
    email = body.get("email")
    if not isinstance(email, str) or not email.strip():
        errors["email"] = "is required"
    else:
        try:
            normalise_email(email)
        except ValueError as exc:
            errors["email"] = str(exc)
    text = body.get("consent_text")
    if not isinstance(text, str) or not text.strip():
        errors["consent_text"] = "is required: the exact consent text the person saw"
    elif len(text) > MAX_TEXT:
        errors["consent_text"] = f"must be at most {MAX_TEXT} characters"
    source = body.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE:
        errors["source"] = f"must be text of at most {MAX_SOURCE} characters"
    ip = body.get("ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip if isinstance(ip, str) else "")
        except ValueError:
            errors["ip"] = "must be an IPv4 or IPv6 address"
    if body.get("user_agent") is not None and not isinstance(body["user_agent"], str):
        errors["user_agent"] = "must be text"
    if not isinstance(body.get("tracking", False), bool):
        errors["tracking"] = "must be true or false"
    return _topics(body.get("topics"), errors), errors


def _topics(slugs: Any, errors: dict[str, str]) -> list[Topic]:
    if not isinstance(slugs, list) or not slugs or not all(isinstance(s, str) for s in slugs):
        errors["topics"] = "must be a non-empty list of topic slugs"
        return []
    found = {t.slug: t for t in db_session().scalars(select(Topic).where(Topic.slug.in_(slugs)))}
    unknown = [s for s in slugs if s not in found]
    if unknown:
        errors["topics"] = "unknown topic: " + ", ".join(sorted(set(unknown)))
    return [found[s] for s in dict.fromkeys(slugs) if s in found]


def _without_mail(email: str, topics: list[Topic], tracking: bool) -> dict[str, Any]:
    """The answer when no confirmation mail went out: all granted, or one is waiting."""
    session = db_session()
    contact = find_by_email(session, email)
    assert contact is not None  # request_optin created it
    if all_granted(session, contact.id, wanted_topics(session, topics, tracking)):
        return {"request_id": None, "status": "already_confirmed"}
    # The address had its day's confirmation mails; the newest request is still waiting.
    waiting = session.scalar(
        select(ConsentRequest.id)
        .where(
            ConsentRequest.contact_id == contact.id,
            ConsentRequest.confirmed_at.is_(None),
            ConsentRequest.expires_at > now(),
        )
        .order_by(ConsentRequest.id.desc())
        .limit(1)
    )
    return {"request_id": waiting, "status": "pending"}


@bp.post("/subscriptions")
@token_required(Role.ADMIN, Role.MARKETER)
def subscriptions_create() -> ResponseReturnValue:
    body = json_body()
    topics, errors = _check(body)
    if errors:
        raise ApiError(422, "validation_error", "Some fields are invalid.", errors)
    session, config = db_session(), settings()
    ip = body.get("ip")
    try:
        limit_ip(
            session,
            secret=config.secret_key,
            ip=ip,
            limit=config.signup_rate_per_ip_hour,
            now=now(),
        )
    except RateLimited as exc:
        session.rollback()
        response = jsonify(
            {
                "error": {
                    "code": "rate_limited",
                    "message": "Too many sign-ups from this IP address; try again later.",
                    "details": {"retry_after": exc.retry_after},
                }
            }
        )
        return response, 429, {"Retry-After": str(exc.retry_after)}
    session.commit()

    source = f"api:{g.api_token.name}"
    if body.get("source"):
        source += f":{body['source']}"
    data = {k: v for k, v in body.items() if k in SIGNUP_FIELDS}
    language = data.get("language") if data.get("language") in ("de", "en") else "de"
    try:
        pending = request_optin(
            session,
            email=body["email"],
            data=data,
            topics=topics,
            text=body["consent_text"],
            language=language,
            origin=Origin(source=source, ip=ip, user_agent=body.get("user_agent")),
            now=now(),
            settings=config,
            ask_tracking=body.get("tracking", False),
        )
    except ContactDataError as exc:
        session.rollback()
        raise ApiError(422, "validation_error", "Some fields are invalid.", exc.errors) from None
    except SuppressedAddress as exc:
        session.rollback()
        raise ApiError(409, "suppressed", str(exc), {"email": str(exc)}) from None
    except ConsentError as exc:
        session.rollback()
        raise ApiError(422, "validation_error", str(exc)) from None
    session.commit()
    if pending is not None:
        return jsonify({"request_id": pending.id, "status": "pending"}), 202
    return jsonify(_without_mail(body["email"], topics, body.get("tracking", False))), 202

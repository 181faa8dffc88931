"""Signup forms (a hosted page and its embeddable snippet) and the rate limits against bots."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, object_session

from nurture.consent.ledger import ConsentError, text_version
from nurture.consent.models import (
    ConsentText,
    SignupAttempt,
    SignupForm,
    Topic,
    TopicKind,
)
from nurture.contacts.fields import LANGUAGES, normalise_email
from nurture.errors import N_

PUBLIC_ID_BYTES = 12
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
MAX_NAME = 100
IP_WINDOW = timedelta(hours=1)
ADDRESS_WINDOW = timedelta(days=1)
# Rate-limit rows only need to outlive the longest window.
ATTEMPTS_KEEP = ADDRESS_WINDOW
# The box for tracking consent (§25 TDDDG) beside a form's topics; its wording becomes part of
# the consent text recorded for whoever ticks it.
TRACKING_LABEL = N_(
    "Yes, you may record whether I open these emails and which links I click, so that they "
    "can be improved. I can withdraw this at any time."
)


def create_form(
    session: Session,
    *,
    name: str,
    topics: list[Topic],
    text: str,
    language: str,
    ask_tracking: bool,
    now: datetime,
) -> SignupForm:
    """A new signup form whose page shows ``text`` verbatim and offers ``topics``."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise ConsentError(N_("A form needs a name of 1 to %(max)d characters."), max=MAX_NAME)
    if language not in LANGUAGES:
        raise ConsentError(N_("The form's language must be German or English."))
    offered = _unique(topics)
    if not offered or any(t.kind is not TopicKind.MARKETING for t in offered):
        raise ConsentError(N_("A form offers at least one topic, and only marketing topics."))
    if ask_tracking and tracking_topic(session) is None:
        raise ConsentError(
            N_("To ask for tracking consent, create a topic of the kind tracking first.")
        )
    version = text_version(session, text, language=language, now=now)
    form = SignupForm(
        public_id=secrets.token_urlsafe(PUBLIC_ID_BYTES),
        name=name,
        topic_ids=[t.id for t in offered],
        text_id=version.id,
        ask_tracking=ask_tracking,
        language=language,
        active=True,
        created_at=now,
    )
    session.add(form)
    session.flush()
    return form


def _unique(topics: list[Topic]) -> list[Topic]:
    seen: dict[int, Topic] = {}
    for topic in topics:
        seen.setdefault(topic.id, topic)
    return list(seen.values())


def list_forms(session: Session) -> list[SignupForm]:
    return list(session.scalars(select(SignupForm).order_by(SignupForm.name, SignupForm.id)))


def get_form_by_public_id(session: Session, public_id: str) -> SignupForm | None:
    """The active form with this public id; None for unknown or deactivated forms."""
    if not public_id or len(public_id) > 32:
        return None
    return session.scalar(
        select(SignupForm).where(SignupForm.public_id == public_id, SignupForm.active.is_(True))
    )


def form_topics(session: Session, form: SignupForm) -> list[Topic]:
    """The form's topics in the order the form lists them."""
    rows = {t.id: t for t in session.scalars(select(Topic).where(Topic.id.in_(form.topic_ids)))}
    return [rows[i] for i in form.topic_ids if i in rows]


def form_text(session: Session, form: SignupForm) -> ConsentText:
    text = session.get(ConsentText, form.text_id)
    assert text is not None  # a foreign key with ON DELETE RESTRICT
    return text


def tracking_topic(session: Session) -> Topic | None:
    """The topic that stands for open/click tracking consent (the oldest, if several)."""
    return session.scalar(
        select(Topic).where(Topic.kind == TopicKind.TRACKING).order_by(Topic.id).limit(1)
    )


def embed_snippet(form: SignupForm, base_url: str) -> str:
    """The HTML form to paste into another website; it posts to the hosted page's URL.

    Rendered with the app's templates in the form's language, so it needs an app context.
    """
    # Imported here: the services above must stay usable without Flask.
    from flask import render_template
    from flask_babel import force_locale

    session = object_session(form)
    assert session is not None, "the form must belong to a session"
    with force_locale(form.language):
        return render_template(
            "consent/signup_snippet.html",
            form=form,
            action=f"{base_url.rstrip('/')}/s/{form.public_id}",
            topics=form_topics(session, form),
            paragraphs=paragraphs(form_text(session, form).text),
            tracking_label=TRACKING_LABEL,
        ).strip()


def paragraphs(text: str) -> list[list[str]]:
    """The consent text as paragraphs of lines, so pages show its line breaks verbatim."""
    blocks = _BLANK_LINES.split(text.replace("\r\n", "\n").strip("\n"))
    return [block.split("\n") for block in blocks if block.strip()]


# -- rate limits ---------------------------------------------------------------------------------


class RateLimited(Exception):
    """Too many sign-ups from one source; ``retry_after``: whole seconds until the next one."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


def _keyed(secret: str, kind: str, value: str) -> str:
    # Keyed, so the table never holds an IP address or email that could be looked up.
    digest = hmac.new(secret.encode(), f"{kind}\n{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}:{digest}"


def ip_key(secret: str, ip: str) -> str:
    return _keyed(secret, "ip", ip.strip().lower())


def address_key(secret: str, email: str) -> str:
    try:
        normal = normalise_email(email)
    except ValueError:
        normal = email.strip().lower()
    return _keyed(secret, "mail", normal)


def retry_after(
    session: Session, *, key: str, limit: int, window: timedelta, now: datetime
) -> int | None:
    """Seconds until ``key`` may act again, or None when it is below ``limit`` in ``window``."""
    if limit <= 0:
        return None
    since = now - window
    in_window = (SignupAttempt.key == key, SignupAttempt.at > since)
    count = session.scalar(select(func.count()).select_from(SignupAttempt).where(*in_window))
    if not count or count < limit:
        return None
    # The hit whose ageing out brings the count below the limit (racing requests can have
    # gone a few over it).
    oldest = session.scalar(
        select(SignupAttempt.at)
        .where(*in_window)
        .order_by(SignupAttempt.at)
        .offset(count - limit)
        .limit(1)
    )
    assert oldest is not None
    return max(1, math.ceil((oldest + window - now).total_seconds()))


def hit(session: Session, *, key: str, now: datetime) -> None:
    session.add(SignupAttempt(key=key, at=now))
    session.flush()


def limit_ip(session: Session, *, secret: str, ip: str | None, limit: int, now: datetime) -> None:
    """Count one sign-up from ``ip``; raise RateLimited when the hour's budget is spent.

    A refused attempt is not counted, so a blocked sender is let in again on time however
    hard it keeps knocking.
    """
    if not ip:
        return
    key = ip_key(secret, ip)
    wait = retry_after(session, key=key, limit=limit, window=IP_WINDOW, now=now)
    if wait is not None:
        raise RateLimited(wait)
    hit(session, key=key, now=now)


def purge_attempts(session: Session, *, now: datetime) -> int:
    """Forget rate-limit hits older than any window."""
    result = session.execute(delete(SignupAttempt).where(SignupAttempt.at < now - ATTEMPTS_KEEP))
    return result.rowcount or 0  # type: ignore[attr-defined]

"""Sign-up pages for recipients: the hosted form (also the target of embedded forms), its
embeddable snippet for staff, and the confirmation page whose button alone confirms.

Embedded forms post from other websites, where no CSRF token of ours can exist, so the sign-up
POST is exempt from CSRF and guarded instead by the form's random public id, a honeypot field,
a signed timestamp (a person needs more than a moment to fill in a form) and a per-IP limit.
What a bot trips answers like a success and records nothing, so it learns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from itsdangerous import BadSignature, URLSafeSerializer

from nurture import csrf
from nurture.auth.access import roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role
from nurture.consent.ledger import ConsentError, Origin
from nurture.consent.models import ConsentText, SignupForm, Topic
from nurture.consent.optin import (
    ExpiredLink,
    InvalidLink,
    SuppressedAddress,
    confirm,
    find_request,
    request_optin,
    request_topics,
)
from nurture.consent.public import bp
from nurture.consent.signup_forms import (
    TRACKING_LABEL,
    RateLimited,
    embed_snippet,
    form_text,
    form_topics,
    get_form_by_public_id,
    limit_ip,
    paragraphs,
)
from nurture.contacts.fields import ContactDataError
from nurture.i18n import LOCALES, translate_error
from nurture.web.context import db_session, now, settings

MIN_FILL_SECONDS = 2
HONEYPOT = "website"  # a name bots love to fill; people never see the field
STAMP = "ts"
MAX_FIELD = 100
TEXT_FIELDS = ("email", "first_name", "last_name")
GENDERS = ("female", "male", "diverse")
# The confirmation token is in the URL: keep it out of caches, referrers and search engines.
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def _stamper() -> URLSafeSerializer:
    return URLSafeSerializer(settings().secret_key, salt="nurture.signup.stamp")


def _stamp(form: SignupForm) -> str:
    return _stamper().dumps([form.public_id, int(now().timestamp())])


def _fill_seconds(form: SignupForm, raw: str) -> float | None:
    """Seconds since the page was served, or None for a stamp we did not sign for this form."""
    try:
        public_id, served = _stamper().loads(raw)
    except (BadSignature, ValueError, TypeError):
        return None
    if public_id != form.public_id or not isinstance(served, int):
        return None
    return (now() - datetime.fromtimestamp(served, UTC)).total_seconds()


def _client() -> tuple[str | None, str | None]:
    agent = request.user_agent.string or None
    return request.remote_addr, agent[:500] if agent else None


def _page(
    template: str, lang: str, status: int = 200, headers: dict[str, str] | None = None, **ctx: Any
) -> ResponseReturnValue:
    """A recipient page in ``lang``, however the browser is set."""
    with force_locale(lang):
        return render_template(template, **ctx), status, headers or {}


def _browser_lang() -> str:
    return request.accept_languages.best_match(LOCALES) or "en"


# -- the hosted form ---------------------------------------------------------------------------


@dataclass
class SignupInput:
    values: dict[str, Any] = field(default_factory=dict)
    topics: list[Topic] = field(default_factory=list)
    tracking: bool = False
    errors: dict[str, str] = field(default_factory=dict)


def _read(form: SignupForm, offered: list[Topic]) -> SignupInput:
    """What the person entered, checked field by field (messages in the form's language)."""
    data = SignupInput()
    raw = {name: (request.form.get(name) or "").strip() for name in TEXT_FIELDS}
    gender = request.form.get("gender") or ""
    data.values = {**raw, "gender": gender if gender in GENDERS else ""}
    if not raw["email"]:
        data.errors["email"] = _("Enter your email address.")
    for name in ("first_name", "last_name"):
        if len(raw[name]) > MAX_FIELD:
            data.errors[name] = _("At most %(max)d characters.", max=MAX_FIELD)
    chosen = set(request.form.getlist("topics"))
    data.topics = [t for t in offered if t.slug in chosen]
    data.values["topics"] = [t.slug for t in data.topics]
    if not data.topics:
        data.errors["topics"] = _("Choose at least one topic.")
    data.tracking = form.ask_tracking and request.form.get("tracking") == "1"
    data.values["tracking"] = data.tracking
    return data


def _form_page(
    form: SignupForm,
    offered: list[Topic],
    *,
    data: SignupInput | None = None,
    problem: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    return _page(
        "consent/signup_form.html",
        form.language,
        status,
        {"Cache-Control": "no-store"},
        form=form,
        topics=offered,
        paragraphs=paragraphs(form_text(db_session(), form).text),
        tracking_label=TRACKING_LABEL,
        stamp=_stamp(form),
        values=data.values if data else {},
        errors=data.errors if data else {},
        problem=problem,
    )


def _sent(form: SignupForm) -> ResponseReturnValue:
    return _page("consent/signup_sent.html", form.language, headers={"Cache-Control": "no-store"})


def _shown_text(form: SignupForm, tracking: bool) -> str:
    """The words the person agreed to: the form's text, plus the tracking box they ticked."""
    text = form_text(db_session(), form).text
    if not tracking:
        return text
    with force_locale(form.language):
        return f"{text}\n\n{_(TRACKING_LABEL)}"


def _active_form(public_id: str) -> SignupForm | None:
    return get_form_by_public_id(db_session(), public_id)


def _unknown_form() -> ResponseReturnValue:
    return _page(
        "consent/signup_problem.html",
        _browser_lang(),
        404,
        heading=_l("This sign-up form does not exist"),
        text=_l("The form may have been removed. Please check the address of the page."),
    )


@bp.route("/s/<public_id>", methods=["GET", "POST"])
def signup(public_id: str) -> ResponseReturnValue:
    form = _active_form(public_id)
    if form is None:
        return _unknown_form()
    session = db_session()
    offered = form_topics(session, form)
    if request.method == "GET":
        return _form_page(form, offered)

    config = settings()
    ip, agent = _client()
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
        return _limited(form.language, exc.retry_after)
    # The hit counts whatever happens below.
    session.commit()

    if request.form.get(HONEYPOT):
        return _sent(form)
    stamp = request.form.get(STAMP)
    # Embedded forms are static HTML without a stamp; the hosted page always sends one.
    if stamp is not None:
        elapsed = _fill_seconds(form, stamp)
        if elapsed is None or elapsed < MIN_FILL_SECONDS:
            return _sent(form)

    with force_locale(form.language):
        data = _read(form, offered)
    if data.errors:
        return _form_page(form, offered, data=data, status=422)
    contact_data = {k: data.values[k] for k in ("first_name", "last_name", "gender")}
    try:
        request_optin(
            session,
            email=data.values["email"],
            data={k: v for k, v in contact_data.items() if v},
            topics=data.topics,
            text=_shown_text(form, data.tracking),
            language=form.language,
            origin=Origin(source=f"form:{form.public_id}", ip=ip, user_agent=agent),
            now=now(),
            settings=config,
            ask_tracking=data.tracking,
        )
    except (ContactDataError, ConsentError) as exc:
        session.rollback()
        with force_locale(form.language):
            _explain(exc, data)
        return _form_page(form, offered, data=data, status=422)
    session.commit()
    return _sent(form)


def _explain(exc: ContactDataError | ConsentError, data: SignupInput) -> None:
    if isinstance(exc, ContactDataError):
        if "email" in exc.errors:
            data.errors["email"] = _("Enter a valid email address.")
        for name in ("first_name", "last_name"):
            if name in exc.errors:
                data.errors[name] = _("Please check this field.")
        if not data.errors:
            data.errors["form"] = _("Please check your entries.")
    elif isinstance(exc, SuppressedAddress):
        data.errors["email"] = translate_error(exc)
    else:
        data.errors["form"] = translate_error(exc)


def _limited(lang: str, seconds: int) -> ResponseReturnValue:
    minutes = max(1, (seconds + 59) // 60)
    return _page(
        "consent/signup_problem.html",
        lang,
        429,
        {"Retry-After": str(seconds), "Cache-Control": "no-store"},
        heading=_l("Too many sign-ups"),
        minutes=minutes,
    )


# CSRF tokens cannot exist in a form embedded in another website; see the module docstring.
csrf.exempt(signup)


@bp.get("/s/<public_id>/embed")
@roles_required(Role.ADMIN, Role.MARKETER)
def signup_embed(public_id: str) -> ResponseReturnValue:
    form = _active_form(public_id)
    if form is None:
        abort(404)
    return render_template(
        "consent/signup_embed.html",
        form=form,
        base_url=settings().base_url.rstrip("/"),
        snippet=embed_snippet(form, settings().base_url),
    )


# -- confirmation --------------------------------------------------------------------------


def _link_problem(exc: ConsentError) -> ResponseReturnValue:
    if isinstance(exc, ExpiredLink):
        status, heading = 410, _l("This link has expired")
    elif isinstance(exc, InvalidLink):
        status, heading = 404, _l("This link is not valid")
    else:
        status, heading = 409, _l("This sign-up cannot be confirmed")
    lang = _browser_lang()
    with force_locale(lang):
        text = translate_error(exc)
    return _page(
        "consent/signup_problem.html", lang, status, PRIVATE_HEADERS, heading=heading, text=text
    )


def _request_lang(text: ConsentText | None) -> str:
    return text.language if text is not None and text.language in LOCALES else _browser_lang()


@bp.get("/confirm/<token>")
def confirm_page(token: str) -> ResponseReturnValue:
    """Shows what would be confirmed. Never confirms: mail scanners open links on their own."""
    session = db_session()
    try:
        pending = find_request(session, token, now=now())
    except ConsentError as exc:
        return _link_problem(exc)
    text = session.get(ConsentText, pending.text_id)
    return _page(
        "consent/signup_confirm.html",
        _request_lang(text),
        200,
        PRIVATE_HEADERS,
        token=token,
        topics=request_topics(session, pending),
        paragraphs=paragraphs(text.text) if text else [],
        confirmed=pending.confirmed_at is not None,
        renewal=pending.repermission,
        form=EmptyForm(),
    )


@bp.post("/confirm/<token>")
def confirm_post(token: str) -> ResponseReturnValue:
    # CSRF applies as everywhere: this POST comes from our own confirmation page.
    session = db_session()
    ip, agent = _client()
    try:
        done = confirm(
            session,
            token,
            origin=Origin(source="confirmation_page", ip=ip, user_agent=agent),
            now=now(),
            settings=settings(),
        )
    except ConsentError as exc:
        session.rollback()
        return _link_problem(exc)
    session.commit()
    text = session.get(ConsentText, done.text_id)
    return _page(
        "consent/signup_confirmed.html",
        _request_lang(text),
        200,
        PRIVATE_HEADERS,
        topics=request_topics(session, done),
        renewal=done.repermission,
    )

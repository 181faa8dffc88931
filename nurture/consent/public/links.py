"""The pages behind the signed links in every mail: unsubscribe and the preference centre.

One-click unsubscribe (RFC 8058): mail software POSTs ``List-Unsubscribe=One-Click`` (form-encoded
or multipart) to ``/u/<signed>`` without cookies, so that one view is exempt from CSRF; it answers
200, never a redirect, and a repeat changes nothing. GET and HEAD on the same URL (scanners and
previews fetch it) only show a page whose button POSTs that same one-click body to the same URL.
The button needs no CSRF token: the signed token in the URL is the secret a forger would lack.

The preference centre ``/p/<signed>`` is an ordinary form with a CSRF token. Pages speak the
contact's language.
"""

from __future__ import annotations

from datetime import date

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from nurture import csrf
from nurture.consent.ledger import Origin
from nurture.consent.preferences import (
    FREQUENCIES,
    Preferences,
    PreferencesError,
    consent_history,
    current_preferences,
    save_preferences,
    topic_choices,
)
from nurture.consent.public import bp
from nurture.consent.suppression import is_suppressed
from nurture.consent.unsubscribe import (
    MAX_REASON,
    PREFERENCES,
    UNSUBSCRIBE,
    LinkTarget,
    resolve_link,
    unsubscribe_all,
)
from nurture.contacts.fields import ContactDataError
from nurture.i18n import LOCALES, translate_error
from nurture.mail.identity import LinkSigner
from nurture.web.context import db_session, now, settings

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
# Links carry a token and pages show personal data: neither belongs in a shared cache.
PRIVATE = {"Cache-Control": "no-store"}
NO_LIMIT = ""


class PreferencesForm(FlaskForm):
    action = HiddenField(default="save")
    first_name = StringField(_l("First name"), validators=[Optional(), Length(max=100)])
    last_name = StringField(_l("Last name"), validators=[Optional(), Length(max=100)])
    company = StringField(_l("Company"), validators=[Optional(), Length(max=200)])
    city = StringField(_l("City"), validators=[Optional(), Length(max=100)])
    # Language names in their own language: whoever reads the wrong one still finds theirs.
    language = SelectField(
        _l("Language of our mails"),
        choices=[SelectChoice("de", "Deutsch"), SelectChoice("en", "English")],
    )
    formality = SelectField(
        _l("How we address you"),
        choices=[
            SelectChoice("formal", _l("Formal (German: Sie)")),
            SelectChoice("informal", _l("Informal (German: Du)")),
        ],
    )
    frequency = SelectField(_l("How often"), choices=[])
    paused_until = DateField(_l("Pause all mail until"), validators=[Optional()])


class UnsubscribeAllForm(FlaskForm):
    action = HiddenField(default="unsubscribe")
    reason = TextAreaField(
        _l("Would you tell us why? (optional)"),
        validators=[Optional(), Length(max=MAX_REASON)],
    )


# -- helpers -------------------------------------------------------------------------------------


def _signer() -> LinkSigner:
    config = settings()
    return LinkSigner(config.secret_key, config.base_url)


def _target(purpose: str, signed: str) -> LinkTarget | None:
    return resolve_link(db_session(), _signer(), purpose, signed)


def _preferences_signed(target: LinkTarget) -> str:
    return _signer().sign(PREFERENCES, target.message.token)


def _language(target: LinkTarget) -> str:
    return target.contact.language if target.contact.language in LOCALES else "en"


def _origin(target: LinkTarget, how: str) -> Origin:
    return Origin(
        source=f"link:{target.message.id}:{how}",
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
    )


def _invalid_link() -> ResponseReturnValue:
    # Forged, for another purpose, or for a mail we no longer know: the same answer for all,
    # so the page tells a prober nothing.
    return render_template("consent/links_invalid.html"), 404, PRIVATE


def _frequency_choices(current: int | None) -> list[SelectChoice]:
    choices = [SelectChoice(NO_LIMIT, _("As many as we send"))]
    caps = sorted({*FREQUENCIES, *([current] if current is not None else [])})
    for cap in caps:
        label = (
            _("At most one mail a week") if cap == 1 else _("At most %(num)d mails a week", num=cap)
        )
        choices.append(SelectChoice(str(cap), label))
    return choices


def _preferences_form(current: Preferences, *, from_request: bool) -> PreferencesForm:
    """The centre's form, filled from ``current`` (and from the request when it was posted)."""
    data = {
        "first_name": current.first_name,
        "last_name": current.last_name,
        "company": current.company,
        "city": current.city,
        "language": current.language,
        "formality": current.formality,
        "frequency": str(current.max_mails_per_week or NO_LIMIT),
        "paused_until": current.paused_until,
    }
    form = PreferencesForm(data=data) if from_request else PreferencesForm(formdata=None, data=data)
    form.frequency.choices = _frequency_choices(current.max_mails_per_week)
    return form


def _cap(value: str | None) -> int | None:
    # The select field has checked the value against its choices already.
    return int(value) if value and value.isdecimal() else None


# -- one-click unsubscribe -----------------------------------------------------------------------


@bp.get("/u/<signed>")
def unsubscribe_page(signed: str) -> ResponseReturnValue:
    """The page behind the header and body link; changes nothing (HEAD is answered the same)."""
    target = _target(UNSUBSCRIBE, signed)
    if target is None:
        return _invalid_link()
    suppressed = is_suppressed(
        db_session(), secret=settings().suppression_secret, email=target.contact.email
    )
    with force_locale(_language(target)):
        page = render_template(
            "consent/links_unsubscribe.html",
            contact=target.contact,
            signed=signed,
            suppressed=suppressed,
            preferences_signed=_preferences_signed(target),
            one_click=(ONE_CLICK_FIELD, ONE_CLICK_VALUE),
            max_reason=MAX_REASON,
        )
    return page, 200, PRIVATE


@bp.post("/u/<signed>")
def unsubscribe_one_click(signed: str) -> ResponseReturnValue:
    """RFC 8058 one-click: no cookies, no CSRF token, 200 (never a redirect), idempotent."""
    target = _target(UNSUBSCRIBE, signed)
    if target is None:
        return _invalid_link()
    if request.form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        with force_locale(_language(target)):
            page = render_template("consent/links_invalid.html", not_one_click=True)
        return page, 400, PRIVATE
    session = db_session()
    # The page's button sends a reason along; mail software never does.
    reason = (request.form.get("reason") or "").strip() or None
    unsubscribe_all(
        session,
        target.contact,
        origin=_origin(target, "unsubscribe"),
        reason=reason,
        now=now(),
        settings=settings(),
    )
    session.commit()
    with force_locale(_language(target)):
        page = render_template(
            "consent/links_unsubscribed.html", preferences_signed=_preferences_signed(target)
        )
    return page, 200, PRIVATE


# Mail software posts without cookies, so it cannot present a CSRF token; only this view.
csrf.exempt(unsubscribe_one_click)


# -- preference centre ---------------------------------------------------------------------------


@bp.route("/p/<signed>", methods=["GET", "POST"])
def preferences(signed: str) -> ResponseReturnValue:
    target = _target(PREFERENCES, signed)
    if target is None:
        return _invalid_link()
    with force_locale(_language(target)):
        if request.method == "POST" and request.form.get("action") == "unsubscribe":
            return _unsubscribe_from_centre(target, signed)
        return _save_or_show(target, signed)


def _save_or_show(target: LinkTarget, signed: str) -> ResponseReturnValue:
    session, contact, moment = db_session(), target.contact, now()
    current = current_preferences(session, contact, now=moment)
    form = _preferences_form(current, from_request=True)
    if request.method == "GET":
        return _centre_page(target, signed, form, current.topics_on)
    topics_on = frozenset(request.form.getlist("topics"))
    if not form.validate_on_submit():
        return _centre_page(target, signed, form, topics_on, status=422)
    wanted = Preferences(
        topics_on=topics_on,
        max_mails_per_week=_cap(form.frequency.data),
        paused_until=form.paused_until.data if isinstance(form.paused_until.data, date) else None,
        language=form.language.data or current.language,
        formality=form.formality.data or current.formality,
        first_name=form.first_name.data or "",
        last_name=form.last_name.data or "",
        company=form.company.data or "",
        city=form.city.data or "",
    )
    try:
        saved = save_preferences(
            session, contact, wanted, origin=_origin(target, "preferences"), now=moment
        )
    except PreferencesError as exc:
        session.rollback()
        problems: dict[str, str] = {}
        if exc.field in form:
            form[exc.field].errors = [*form[exc.field].errors, translate_error(exc)]
        else:
            problems[exc.field] = translate_error(exc)
        return _centre_page(target, signed, form, topics_on, status=422, problems=problems)
    except ContactDataError as exc:
        session.rollback()
        for name, message in exc.errors.items():
            if name in form:
                form[name].errors = [*form[name].errors, _(message)]
        return _centre_page(target, signed, form, topics_on, status=422)
    session.commit()
    # In the language just chosen: the next page is in it too.
    with force_locale(_language(target)):
        if saved.changed:
            flash(_("Your preferences have been saved."), "success")
        else:
            flash(_("Nothing changed."), "info")
    return redirect(url_for("public.preferences", signed=signed), 303)


def _unsubscribe_from_centre(target: LinkTarget, signed: str) -> ResponseReturnValue:
    session = db_session()
    form = UnsubscribeAllForm()
    if not form.validate_on_submit():
        return _centre_page(target, signed, None, None, leave_form=form, status=422)
    unsubscribe_all(
        session,
        target.contact,
        origin=_origin(target, "preferences"),
        reason=form.reason.data,
        now=now(),
        settings=settings(),
    )
    session.commit()
    flash(_("You have been unsubscribed. You will receive no more mail from us."), "success")
    return redirect(url_for("public.preferences", signed=signed), 303)


def _centre_page(
    target: LinkTarget,
    signed: str,
    form: PreferencesForm | None,
    topics_on: frozenset[str] | None,
    *,
    leave_form: UnsubscribeAllForm | None = None,
    status: int = 200,
    problems: dict[str, str] | None = None,
) -> ResponseReturnValue:
    session, contact = db_session(), target.contact
    current = current_preferences(session, contact, now=now())
    page = render_template(
        "consent/links_preferences.html",
        contact=contact,
        signed=signed,
        form=form or _preferences_form(current, from_request=False),
        leave_form=leave_form or UnsubscribeAllForm(formdata=None),
        choices=topic_choices(session, contact.id),
        topics_on=current.topics_on if topics_on is None else topics_on,
        history=consent_history(session, contact.id),
        suppressed=is_suppressed(
            session, secret=settings().suppression_secret, email=contact.email
        ),
        problems=problems or {},
        max_reason=MAX_REASON,
    )
    return page, status, PRIVATE

"""Settings → Topics: what contacts can consent to, and the signup forms that ask for it.

Admins and marketers see both; only admins add topics and forms (a topic or a form's consent
text is a legal statement of the sender, so it is an admin's decision).
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from nurture.auth.access import roles_required
from nurture.auth.models import Role
from nurture.consent.ledger import ConsentError
from nurture.consent.models import Topic, TopicKind
from nurture.consent.signup_forms import create_form, list_forms
from nurture.consent.topics import MAX_DESCRIPTION, MAX_NAME, TopicError, create_topic, list_topics
from nurture.consent.ui import bp
from nurture.i18n import translate_error
from nurture.web.context import db_session, now

KIND_LABELS = {
    TopicKind.MARKETING.value: _l("Marketing mail"),
    TopicKind.TRACKING.value: _l("Open and click tracking"),
}
LANGUAGE_LABELS = {"de": _l("German"), "en": _l("English")}
# Keeps a pasted novel out of the request; the consent text itself has no set limit.
MAX_TEXT = 10_000


class TopicForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=MAX_NAME)])
    slug = StringField(_l("Slug"), validators=[DataRequired(), Length(max=64)])
    kind = SelectField(
        _l("Kind"),
        choices=[SelectChoice(value, label) for value, label in KIND_LABELS.items()],
        default=TopicKind.MARKETING.value,
    )
    own_similar_products = BooleanField(_l("About our own similar products"))
    description = TextAreaField(
        _l("Description"), validators=[Optional(), Length(max=MAX_DESCRIPTION)]
    )


class SignupFormForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    topics = SelectMultipleField(
        _l("Topics offered"),
        coerce=int,
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
    )
    text = TextAreaField(
        _l("Consent text shown"), validators=[DataRequired(), Length(max=MAX_TEXT)]
    )
    language = SelectField(
        _l("Language"),
        choices=[SelectChoice(value, label) for value, label in LANGUAGE_LABELS.items()],
        default="de",
    )
    ask_tracking = BooleanField(_l("Also ask for tracking consent"))


def _signup_form(topics: list[Topic]) -> SignupFormForm:
    form = SignupFormForm(prefix="form")
    form.topics.choices = [
        SelectChoice(t.id, f"{t.name} ({t.slug})") for t in topics if t.kind is TopicKind.MARKETING
    ]
    return form


def _page(
    topic_form: TopicForm, signup_form: SignupFormForm, status: int = 200
) -> ResponseReturnValue:
    session = db_session()
    topics = list_topics(session)
    page = render_template(
        "consent/admin_topics.html",
        topics=topics,
        topics_by_id={topic.id: topic for topic in topics},
        signup_forms=list_forms(session),
        form=topic_form,
        signup_form=signup_form,
        kind_labels=KIND_LABELS,
        language_labels=LANGUAGE_LABELS,
        can_create=current_user.has_role(Role.ADMIN),
    )
    return page, status


def _refused(form: FlaskForm, exc: TopicError | ConsentError, field: str | None) -> None:
    db_session().rollback()
    message = translate_error(exc)
    if field and field in form:
        form[field].errors = [*form[field].errors, message]
    flash(message, "error")


@bp.route("/settings/topics", methods=["GET", "POST"], endpoint="topics")
@roles_required(Role.ADMIN, Role.MARKETER)
def topics() -> ResponseReturnValue:
    topic_form = TopicForm()
    signup_form = _signup_form(list_topics(db_session()))
    if request.method == "GET":
        return _page(topic_form, signup_form)
    if not current_user.has_role(Role.ADMIN):
        abort(403)
    if not topic_form.validate_on_submit():
        return _page(topic_form, signup_form, 422)
    try:
        topic = create_topic(
            db_session(),
            name=topic_form.name.data or "",
            slug=topic_form.slug.data or "",
            kind=topic_form.kind.data or "",
            own_similar_products=bool(topic_form.own_similar_products.data),
            description=topic_form.description.data or "",
            now=now(),
        )
    except TopicError as exc:
        _refused(topic_form, exc, exc.field)
        return _page(topic_form, signup_form, 422)
    db_session().commit()
    flash(_("Topic %(name)s (%(slug)s) added.", name=topic.name, slug=topic.slug), "success")
    return redirect(url_for("consent.topics"))


@bp.post("/settings/topics/forms", endpoint="form_create")
@roles_required(Role.ADMIN)
def form_create() -> ResponseReturnValue:
    session = db_session()
    topics_all = list_topics(session)
    signup_form = _signup_form(topics_all)
    if not signup_form.validate_on_submit():
        return _page(TopicForm(formdata=None), signup_form, 422)
    by_id = {topic.id: topic for topic in topics_all}
    chosen = [by_id[i] for i in signup_form.topics.data or [] if i in by_id]
    try:
        created = create_form(
            session,
            name=signup_form.name.data or "",
            topics=chosen,
            text=(signup_form.text.data or "").replace("\r\n", "\n"),
            language=signup_form.language.data or "de",
            ask_tracking=bool(signup_form.ask_tracking.data),
            now=now(),
        )
    except ConsentError as exc:
        _refused(signup_form, exc, None)
        return _page(TopicForm(formdata=None), signup_form, 422)
    session.commit()
    flash(_("Signup form %(name)s added.", name=created.name), "success")
    return redirect(url_for("consent.topics", _anchor="signup-forms"))

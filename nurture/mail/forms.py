"""Forms of the mail pages: template editor and test mail."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, Field, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from nurture.auth.forms import EmptyForm

__all__ = ["EmptyForm", "TemplateForm", "TemplateVersionForm", "TestMailForm"]

LAYOUT_CHOICES = [
    SelectChoice("default", _l("Standard layout with footer")),
    SelectChoice("none", _l("No layout: the HTML is a complete document")),
]
# Generous, but bounded: the whole request is capped anyway, this keeps one field sane.
SOURCE_MAX = 500_000


class TemplateVersionForm(FlaskForm):
    """The content of one version: what editing an existing template changes."""

    subject = StringField(_l("Subject"), validators=[DataRequired(), Length(max=2000)])
    html = TextAreaField(_l("HTML"), validators=[DataRequired(), Length(max=SOURCE_MAX)])
    text = TextAreaField(
        _l("Plain text (optional)"), validators=[Optional(), Length(max=SOURCE_MAX)]
    )
    css = TextAreaField(_l("CSS (optional)"), validators=[Optional(), Length(max=SOURCE_MAX)])
    layout = SelectField(_l("Layout"), choices=LAYOUT_CHOICES, default="default")


class TemplateForm(TemplateVersionForm):
    """A new template: a name and description, and the content of its first version."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    description = StringField(_l("Description"), validators=[Optional(), Length(max=2000)])


def _deliverable_syntax(_form: FlaskForm, field: Field) -> None:
    # The same rules as login addresses: the default is the user's own login, which must pass,
    # and staff mailboxes may live on internal or test domains.
    try:
        validate_email(
            (field.data or "").strip(),
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError:
        raise ValidationError(_("Enter a valid email address.")) from None


class TestMailForm(FlaskForm):
    to = EmailField(
        _l("Send to"), validators=[DataRequired(), Length(max=320), _deliverable_syntax]
    )

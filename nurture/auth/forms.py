from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from nurture.auth.models import Role

ROLE_CHOICES = [
    SelectChoice(Role.ADMIN.value, _l("Admin")),
    SelectChoice(Role.MARKETER.value, _l("Marketer")),
    SelectChoice(Role.SALES.value, _l("Sales")),
]


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=320)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class CreateUserForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=320)])
    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, validators=[DataRequired()])
    password = PasswordField(
        _l("Password (leave empty to generate one)"), validators=[Optional(), Length(max=1024)]
    )


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, validators=[DataRequired()])


class PasswordForm(FlaskForm):
    current_password = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=1024)]
    )
    password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
    )


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"), validators=[DataRequired(), Length(max=100)])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that POST."""

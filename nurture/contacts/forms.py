"""Forms of the contact pages: the contact editor (with one input per custom field) and the
"log a call / meeting / note" form.

The editor checks little itself: the contact services validate every field and name the
problems per field, so the messages are the same as in the API and the importer.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import Field, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import DateInput, EmailInput, NumberInput, TelInput, URLInput

from nurture.auth.models import User
from nurture.contacts.custom_fields import Definitions
from nurture.contacts.models import Contact, CustomField, Lifecycle

CUSTOM_PREFIX = "cf_"
ACTIVITY_TEXT_MAX = 2000

GENDER_CHOICES = [
    SelectChoice("unknown", _l("Not stated")),
    SelectChoice("female", _l("Female (Ms)")),
    SelectChoice("male", _l("Male (Mr)")),
    SelectChoice("diverse", _l("Diverse")),
]
FORMALITY_CHOICES = [
    SelectChoice("formal", _l("Formal (Sie)")),
    SelectChoice("informal", _l("Informal (Du)")),
]
LANGUAGE_CHOICES = [SelectChoice("de", _l("German")), SelectChoice("en", _l("English"))]
LIFECYCLE_LABELS = {
    Lifecycle.LEAD: _l("Lead"),
    Lifecycle.CUSTOMER: _l("Customer"),
    Lifecycle.AT_RISK: _l("At risk"),
    Lifecycle.CHURNED: _l("Churned"),
    Lifecycle.WON_BACK: _l("Won back"),
}
LIFECYCLE_CHOICES = [SelectChoice(m.value, label) for m, label in LIFECYCLE_LABELS.items()]
ACTIVITY_CHOICES = [
    SelectChoice("call", _l("Call")),
    SelectChoice("meeting", _l("Meeting")),
    SelectChoice("note", _l("Note")),
]

# What each field is called on the pages (also in the timeline's "Data changed: …").
FIELD_LABELS = {
    "email": _l("Email"),
    "first_name": _l("First name"),
    "last_name": _l("Last name"),
    "title": _l("Title"),
    "gender": _l("Gender"),
    "formality": _l("Form of address"),
    "language": _l("Language"),
    "birthday": _l("Birthday"),
    "time_zone": _l("Time zone"),
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
    "owner_id": _l("Owner"),
    "source": _l("Source"),
}
# The form's text inputs: plain strings for the services, whatever the input type.
TEXT_INPUTS = (
    "email",
    "first_name",
    "last_name",
    "title",
    "birthday",
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
    "source",
)
SELECTS = ("gender", "formality", "language", "lifecycle")


class ContactForm(FlaskForm):
    """Every writable field; custom fields are added per request by ``contact_form_class``."""

    email = StringField(FIELD_LABELS["email"], widget=EmailInput())
    first_name = StringField(FIELD_LABELS["first_name"])
    last_name = StringField(FIELD_LABELS["last_name"])
    title = StringField(FIELD_LABELS["title"])
    # The services check these values; a select only offers them.
    gender = SelectField(
        FIELD_LABELS["gender"], choices=GENDER_CHOICES, default="unknown", validate_choice=False
    )
    formality = SelectField(
        FIELD_LABELS["formality"],
        choices=FORMALITY_CHOICES,
        default="formal",
        validate_choice=False,
    )
    language = SelectField(
        FIELD_LABELS["language"], choices=LANGUAGE_CHOICES, default="de", validate_choice=False
    )
    birthday = StringField(FIELD_LABELS["birthday"], widget=DateInput())
    time_zone = StringField(FIELD_LABELS["time_zone"])
    company = StringField(FIELD_LABELS["company"])
    industry = StringField(FIELD_LABELS["industry"])
    company_size = StringField(FIELD_LABELS["company_size"])
    city = StringField(FIELD_LABELS["city"])
    country = StringField(FIELD_LABELS["country"])
    customer_number = StringField(FIELD_LABELS["customer_number"])
    phone = StringField(FIELD_LABELS["phone"], widget=TelInput())
    mobile = StringField(FIELD_LABELS["mobile"], widget=TelInput())
    website = StringField(FIELD_LABELS["website"], widget=URLInput())
    linkedin = StringField(FIELD_LABELS["linkedin"], widget=URLInput())
    xing = StringField(FIELD_LABELS["xing"], widget=URLInput())
    lifecycle = SelectField(
        FIELD_LABELS["lifecycle"],
        choices=LIFECYCLE_CHOICES,
        default=Lifecycle.LEAD.value,
        validate_choice=False,
    )
    # Checked against the offered users: the services accept any id, the database would not.
    owner_id = SelectField(FIELD_LABELS["owner_id"], choices=[], default="")
    tags = StringField(FIELD_LABELS["tags"])
    source = StringField(FIELD_LABELS["source"])

    def custom_inputs(self) -> list[Field]:
        return [field for field in self if field.name.startswith(CUSTOM_PREFIX)]


def _custom_input(definition: CustomField) -> Field:
    label = definition.label
    if definition.kind == "choice":
        return SelectField(
            label,
            choices=[SelectChoice("", "–"), *(SelectChoice(c, c) for c in definition.choices)],
            # The services name an unknown choice precisely; WTForms would only say "invalid".
            validate_choice=False,
        )
    widget = {"number": NumberInput(step="any"), "date": DateInput()}.get(definition.kind)
    return StringField(label, widget=widget) if widget else StringField(label)


def contact_form_class(custom_fields: Definitions) -> type[ContactForm]:
    """The contact form with one input per defined custom field, named ``cf_<key>``."""
    attrs = {f"{CUSTOM_PREFIX}{key}": _custom_input(d) for key, d in custom_fields.items()}
    return type("ContactFormWithCustomFields", (ContactForm,), attrs)


def owner_choices(users: list[User]) -> list[SelectChoice]:
    choices = [SelectChoice("", _l("No owner"))]
    for user in users:
        label = f"{user.name} <{user.email}>" if user.name else user.email
        choices.append(SelectChoice(str(user.id), label))
    return choices


def initial_data(contact: Contact | None, custom_fields: Definitions) -> dict[str, Any]:
    """The form's values for ``contact`` (None: a new contact's defaults)."""
    if contact is None:
        return {}
    data: dict[str, Any] = {}
    for name in TEXT_INPUTS:
        value = getattr(contact, name)
        if name == "birthday":
            value = value.isoformat() if value else ""
        elif name == "tags":
            value = ", ".join(value or [])
        data[name] = value or ""
    data |= {name: str(getattr(contact, name)) for name in SELECTS}
    data["owner_id"] = str(contact.owner_id) if contact.owner_id else ""
    custom = contact.custom or {}
    for key in custom_fields:
        value = custom.get(key)
        data[f"{CUSTOM_PREFIX}{key}"] = "" if value is None else str(value)
    return data


def submitted_values(form: ContactForm, custom_fields: Definitions) -> dict[str, Any]:
    """The form as contact data for the services: every field, empty text clears it."""
    data: dict[str, Any] = {name: form[name].data or "" for name in TEXT_INPUTS}
    data["tags"] = [tag for tag in data["tags"].split(",") if tag.strip()]
    data |= {name: form[name].data or "" for name in SELECTS}
    owner = form.owner_id.data or ""
    data["owner_id"] = int(owner) if owner.isdigit() else None
    custom: dict[str, Any] = {}
    for key in custom_fields:
        value = form[f"{CUSTOM_PREFIX}{key}"].data
        custom[key] = value if isinstance(value, str) and value.strip() else None
    if custom:
        data["custom"] = custom
    return data


def input_name(error_key: str) -> str:
    """The form input an error of the services belongs to (``custom.tier`` → ``cf_tier``)."""
    if error_key.startswith("custom."):
        return CUSTOM_PREFIX + error_key.removeprefix("custom.")
    return error_key


class ActivityForm(FlaskForm):
    kind = SelectField(_l("What"), choices=ACTIVITY_CHOICES, default="call")
    text = TextAreaField(_l("Notes"), validators=[DataRequired(), Length(max=ACTIVITY_TEXT_MAX)])

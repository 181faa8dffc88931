"""What a template sees of a contact: plain data, never the ORM object."""

from __future__ import annotations

from typing import Any

from nurture.contacts.models import Contact
from nurture.contacts.salutation import Formality, Gender, Person, address_form, salutation

# Only these fields reach templates; internal ones (owner, custom JSON as a whole) stay out.
TEMPLATE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "industry",
    "city",
    "country",
    "customer_number",
    "phone",
    "website",
)


def person_of(contact: Contact) -> Person:
    return Person(
        first_name=contact.first_name,
        last_name=contact.last_name,
        gender=Gender(contact.gender),
        title=contact.title,
        language=contact.language,
        formality=Formality(contact.formality),
    )


def template_context(contact: Contact) -> dict[str, Any]:
    """The JSON-storable context of a mail to ``contact``: its fields, greeting and language."""
    person = person_of(contact)
    fields = {name: getattr(contact, name) or "" for name in TEMPLATE_FIELDS}
    fields["name"] = address_form(person)
    fields["tags"] = list(contact.tags or [])
    fields |= {
        f"custom_{k}": v
        for k, v in (contact.custom or {}).items()
        if isinstance(v, str | int | float | bool)
    }
    return {"contact": fields, "salutation": salutation(person), "lang": contact.language}

"""Typed custom fields: defined once in Settings, validated on every write.

A value is checked against its field's kind before it reaches ``Contact.custom``; a key that no
field defines is refused, so a typo in an API client or a CSV mapping cannot grow a shadow schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.contacts.models import CUSTOM_FIELD_KINDS, Contact, CustomField
from nurture.errors import N_, UserFacingError

KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_TEXT = 500
MAX_CHOICES = 100
GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")

Definitions = Mapping[str, CustomField]


class CustomFieldError(UserFacingError):
    """A field definition cannot be saved or deleted."""


def definitions(session: Session) -> dict[str, CustomField]:
    """Every defined field by key, in display order."""
    fields = session.scalars(select(CustomField).order_by(CustomField.position, CustomField.id))
    return {field.key: field for field in fields}


def parse_date(value: Any) -> date:
    """A date from ISO ``YYYY-MM-DD`` or German ``DD.MM.YYYY``; ValueError otherwise."""
    if isinstance(value, datetime):
        raise ValueError("must be a date, not a time")
    if isinstance(value, date):
        return value
    text = str(value).strip()
    match = GERMAN_DATE.fullmatch(text)
    try:
        if match:
            day, month, year = (int(part) for part in match.groups())
            return date(year, month, day)
        return date.fromisoformat(text)
    except ValueError:  # also 31.02.2020
        raise ValueError(f"{text!r} is not a date as DD.MM.YYYY or YYYY-MM-DD") from None


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int | float):
        number = Decimal(str(value))
    else:
        # German spreadsheets write 1.234,5; a lone comma is the decimal separator.
        text = str(value).strip().replace(" ", "")
        if "," in text:
            text = text.replace(".", "").replace(",", ".")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return int(number) if number == number.to_integral_value() else float(number)


def clean_value(field: CustomField, value: Any) -> Any:
    """The stored form of ``value`` for ``field``; None means "remove the value"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if field.kind == "text":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError("must be text")
        text = " ".join(str(value).split())
        if len(text) > MAX_TEXT:
            raise ValueError(f"must be at most {MAX_TEXT} characters")
        return text
    if field.kind == "number":
        return _number(value)
    if field.kind == "date":
        return parse_date(value).isoformat()
    # choice: the stored spelling is the defined one, whatever case the input used.
    text = " ".join(str(value).split())
    for choice in field.choices:
        if choice.casefold() == text.casefold():
            return choice
    raise ValueError(f"{text!r} is not one of: {', '.join(field.choices)}")


def clean_custom(defs: Definitions, values: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(cleaned values, errors by ``custom.<key>``); a None value removes the key on write."""
    if not isinstance(values, dict):
        return {}, {"custom": "must be an object"}
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in values.items():
        field = defs.get(key)
        if field is None:
            errors[f"custom.{key}"] = "is not a defined custom field"
            continue
        try:
            clean[key] = clean_value(field, value)
        except ValueError as exc:
            errors[f"custom.{key}"] = str(exc)
    return clean, errors


def _clean_choices(kind: str, choices: list[str]) -> list[str]:
    if kind != "choice":
        return []
    clean: list[str] = []
    for choice in choices:
        text = " ".join(choice.split())
        if text and text.casefold() not in {c.casefold() for c in clean}:
            clean.append(text)
    if not clean:
        raise CustomFieldError(N_("A choice field needs at least one choice."))
    if len(clean) > MAX_CHOICES:
        raise CustomFieldError(N_("A choice field can have at most 100 choices."))
    if any(len(choice) > 100 for choice in clean):
        raise CustomFieldError(N_("A choice can be at most 100 characters long."))
    return clean


def create_field(
    session: Session, *, key: str, label: str, kind: str, choices: list[str], now: datetime
) -> CustomField:
    key = key.strip()
    if not KEY.fullmatch(key):
        raise CustomFieldError(
            N_(
                "The key must start with a lower-case letter and contain only a-z, 0-9 and _ "
                "(at most 40 characters)."
            )
        )
    if kind not in CUSTOM_FIELD_KINDS:
        raise CustomFieldError(N_("Unknown field type %(kind)s."), kind=kind)
    label = " ".join(label.split())
    if not label or len(label) > 100:
        raise CustomFieldError(N_("The label must be 1 to 100 characters long."))
    if session.scalar(select(CustomField.id).where(CustomField.key == key)) is not None:
        raise CustomFieldError(N_("A custom field with the key %(key)s already exists."), key=key)
    position = session.scalar(select(func.coalesce(func.max(CustomField.position), 0))) or 0
    field = CustomField(
        key=key,
        label=label,
        kind=kind,
        choices=_clean_choices(kind, choices),
        position=position + 1,
        created_at=now,
    )
    session.add(field)
    session.flush()
    return field


def update_field(session: Session, field: CustomField, *, label: str, choices: list[str]) -> None:
    """Change the label and, for a choice field, the choices; a choice in use stays."""
    label = " ".join(label.split())
    if not label or len(label) > 100:
        raise CustomFieldError(N_("The label must be 1 to 100 characters long."))
    new_choices = _clean_choices(field.kind, choices)
    for removed in set(field.choices) - set(new_choices):
        if values_in_use(session, field.key, removed):
            raise CustomFieldError(
                N_("The choice %(choice)s is still used by contacts and cannot be removed."),
                choice=removed,
            )
    field.label = label
    field.choices = new_choices
    session.flush()


def values_in_use(session: Session, key: str, value: str | None = None) -> int:
    """How many contacts have a value for ``key`` (or exactly ``value``)."""
    element = Contact.custom[key].as_string()
    condition = element.is_not(None) if value is None else element == value
    return session.scalar(select(func.count()).select_from(Contact).where(condition)) or 0


def delete_field(session: Session, field: CustomField) -> None:
    """Remove a field no contact uses; data is never dropped as a side effect."""
    used = values_in_use(session, field.key)
    if used:
        raise CustomFieldError(
            N_("%(count)s contacts have a value for %(key)s; clear them before deleting it."),
            count=used,
            key=field.key,
        )
    session.delete(field)
    session.flush()

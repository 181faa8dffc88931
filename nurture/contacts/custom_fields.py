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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.contacts.models import CUSTOM_FIELD_KINDS, Contact, CustomField
from nurture.errors import N_, UserFacingError

KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_TEXT = 500
MAX_CHOICES = 100
MAX_LABEL = 100
GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
# Only the extended form: date.fromisoformat also reads 20260301 and week dates, so a number
# sent by mistake would silently become a date.
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A comma is the decimal separator (German first), with optional dots grouping thousands.
GERMAN_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+")
# Commas that can only be English thousands separators: 1,234.5 or 1,234,567.
ENGLISH_GROUPED = re.compile(r"[+-]?\d{1,3}(?:(?:,\d{3})+\.\d+|(?:,\d{3}){2,})")
# Beyond this a JSON number loses integer precision in JavaScript clients and spreadsheets.
MAX_NUMBER = 10**15

Definitions = Mapping[str, CustomField]


class CustomFieldError(UserFacingError):
    """A field definition cannot be saved or deleted; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None, **params: Any) -> None:
        super().__init__(message, **params)
        self.field = field


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
        if ISO_DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:  # also 31.02.2020
        pass
    raise ValueError(f"{text!r} is not a date as DD.MM.YYYY or YYYY-MM-DD")


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int | float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        # German spreadsheets write 1.234,5; English ones 1,234.5. Anything else with a comma
        # is refused rather than guessed, so a number never silently changes its size.
        text = "".join(value.split())
        if GERMAN_NUMBER.fullmatch(text):
            text = text.replace(".", "").replace(",", ".")
        elif ENGLISH_GROUPED.fullmatch(text):
            text = text.replace(",", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        raise ValueError("must be a number")
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a number")
    if abs(number) >= MAX_NUMBER:
        raise ValueError(f"{value!r} is too large (at most 15 digits before the decimal point)")
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
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"must be one of: {', '.join(field.choices)}")
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
        raise CustomFieldError(N_("A choice field needs at least one choice."), field="choices")
    if len(clean) > MAX_CHOICES:
        raise CustomFieldError(N_("A choice field can have at most 100 choices."), field="choices")
    if any(len(choice) > 100 for choice in clean):
        raise CustomFieldError(N_("A choice can be at most 100 characters long."), field="choices")
    return clean


def _clean_label(label: str) -> str:
    label = " ".join(label.split())
    if not label or len(label) > MAX_LABEL:
        raise CustomFieldError(N_("The label must be 1 to 100 characters long."), field="label")
    return label


def _duplicate_key(key: str) -> CustomFieldError:
    return CustomFieldError(
        N_("A custom field with the key %(key)s already exists."), field="key", key=key
    )


def create_field(
    session: Session, *, key: str, label: str, kind: str, choices: list[str], now: datetime
) -> CustomField:
    """A new field, last in display order; CustomFieldError says what is wrong."""
    key = key.strip()
    if not KEY.fullmatch(key):
        raise CustomFieldError(
            N_(
                "The key must start with a lower-case letter and contain only a-z, 0-9 and _ "
                "(at most 40 characters)."
            ),
            field="key",
        )
    if kind not in CUSTOM_FIELD_KINDS:
        raise CustomFieldError(N_("Unknown field type %(kind)s."), field="kind", kind=kind)
    label = _clean_label(label)
    if session.scalar(select(CustomField.id).where(CustomField.key == key)) is not None:
        raise _duplicate_key(key)
    position = session.scalar(select(func.coalesce(func.max(CustomField.position), 0))) or 0
    field = CustomField(
        key=key,
        label=label,
        kind=kind,
        choices=_clean_choices(kind, choices),
        position=position + 1,
        created_at=now,
    )
    try:
        # Two admins saving the same key at once: the loser gets the message, not a 500.
        with session.begin_nested():
            session.add(field)
    except IntegrityError:
        raise _duplicate_key(key) from None
    return field


def update_field(session: Session, field: CustomField, *, label: str, choices: list[str]) -> None:
    """Change the label and, for a choice field, the choices; a choice in use stays."""
    label = _clean_label(label)
    new_choices = _clean_choices(field.kind, choices)
    # In defined order, so the message names the same choice every time.
    for removed in [choice for choice in field.choices if choice not in new_choices]:
        if values_in_use(session, field.key, removed):
            raise CustomFieldError(
                N_("The choice %(choice)s is still used by contacts and cannot be removed."),
                field="choices",
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


def values_in_use_by_key(session: Session, keys: list[str]) -> dict[str, int]:
    """``values_in_use`` for many keys in one pass over the contacts (COUNT skips NULL)."""
    if not keys:
        return {}
    counts = [func.count(Contact.custom[key].as_string()) for key in keys]
    row = session.execute(select(*counts).select_from(Contact)).one()
    return {key: int(count or 0) for key, count in zip(keys, row, strict=True)}


def choice_usage(session: Session, field: CustomField) -> dict[str, int]:
    """How many contacts have each defined choice, in defined order."""
    return {choice: values_in_use(session, field.key, choice) for choice in field.choices}


def delete_field(session: Session, field: CustomField) -> None:
    """Remove a field no contact uses; data is never dropped as a side effect."""
    used = values_in_use(session, field.key)
    if used:
        raise CustomFieldError(
            N_(
                "Contacts with a value for %(key)s: %(count)s. "
                "Clear the values before deleting the field."
            ),
            count=used,
            key=field.key,
        )
    session.delete(field)
    session.flush()

"""Business events (orders, complaints, cancellations, …) from CSV files as ERPs export them.

Every row becomes one ``record_activities`` call, so the rules are those of the API; a row that
fails is skipped and reported with its physical line number while the others are recorded.

Decisions:
- The contact is named by ``customer_number`` (wins, as in the contact upsert) or ``email``;
  an import of events never creates a contact.
- ``occurred_at`` is ISO 8601 or German ``DD.MM.YYYY [HH:MM[:SS]]``; a time without an offset
  (and a bare date, meaning midnight) is read as Europe/Berlin wall time, which is what German
  spreadsheets mean. An empty cell means "now".
- Amounts may be written German (``1.234,50``) or English (``1234.50``); an empty currency of a
  type that needs one is EUR.
- Idempotency: a row's ``id`` is the client's id (dedup key ``source:type:id``, the same as the
  API's). A row without one gets an id derived from its mapped cells, so re-running the same
  file records nothing new; the price is that two identical rows of one file count once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.contacts.activity import ACTIVITY_TYPES, ActivityError, record_activities
from nurture.contacts.importer import RAGGED, ImportFileError, ImportReport, RowError, read_csv
from nurture.contacts.models import Contact
from nurture.errors import N_

BERLIN = ZoneInfo("Europe/Berlin")
DEFAULT_CURRENCY = "EUR"
CONTACT_FIELDS = ("email", "customer_number")
# The fields of the event types, in first-seen order; a row fills those of its type.
PAYLOAD_FIELDS = tuple(dict.fromkeys(f for fields in ACTIVITY_TYPES.values() for f in fields))
# Every target a column of an events file can be mapped to, in the order the wizard lists them.
EVENT_FIELDS = ("email", "customer_number", "type", "occurred_at", "id", *PAYLOAD_FIELDS)
# Normalised header (lower case, letters and digits only) → event field.
AUTO_MAP = {
    **dict.fromkeys(["email", "mail", "emailadresse", "emailaddress", "mailadresse"], "email"),
    **dict.fromkeys(["kundennummer", "customernumber", "kundennr", "debitor"], "customer_number"),
    **dict.fromkeys(["type", "typ", "art", "ereignis", "event", "eventtype", "vorgang"], "type"),
    **dict.fromkeys(
        ["occurredat", "datum", "date", "zeitpunkt", "zeit", "time", "timestamp"], "occurred_at"
    ),
    **dict.fromkeys(["id", "vorgangsnummer", "vorgangsid", "eventid", "externeid"], "id"),
    **dict.fromkeys(["amount", "betrag", "summe", "umsatz", "wert"], "amount"),
    **dict.fromkeys(["currency", "wahrung", "waehrung"], "currency"),
    **dict.fromkeys(["orderid", "bestellnummer", "auftragsnummer", "bestellnr"], "order_id"),
    **dict.fromkeys(["reason", "grund", "kundigungsgrund", "beschwerdegrund"], "reason"),
    **dict.fromkeys(["severity", "schwere", "schweregrad", "prioritat", "prio"], "severity"),
    **dict.fromkeys(["product", "produkt", "artikel", "vertrag"], "product"),
    **dict.fromkeys(["period", "zeitraum", "periode"], "period"),
    **dict.fromkeys(["text", "notiz", "note", "beschreibung", "kommentar", "bemerkung"], "text"),
    **dict.fromkeys(["by", "mitarbeiter", "bearbeiter"], "by"),
}
# Spellings of the event types in German and English exports → our type.
TYPE_ALIASES = {
    **dict.fromkeys(["order", "bestellung", "auftrag", "kauf"], "order"),
    **dict.fromkeys(["complaint", "beschwerde", "reklamation"], "complaint"),
    **dict.fromkeys(
        ["cancellation", "kundigung", "kuendigung", "storno", "stornierung"], "cancellation"
    ),
    **dict.fromkeys(
        ["expectedrevenue", "umsatzerwartung", "umsatzprognose", "prognose", "forecast"],
        "expected_revenue",
    ),
    **dict.fromkeys(["call", "anruf", "telefonat"], "call"),
    **dict.fromkeys(["meeting", "termin", "besuch", "treffen"], "meeting"),
    **dict.fromkeys(["note", "notiz"], "note"),
}
SEVERITY_ALIASES = {"niedrig": "low", "gering": "low", "mittel": "medium", "hoch": "high"}
GERMAN_TIME = re.compile(
    r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?", re.ASCII
)
GERMAN_THOUSANDS = re.compile(r"\d{1,3}(\.\d{3})+", re.ASCII)


def _norm(text: str) -> str:
    # "Währung" → "wahrung", "Kündigung" → "kundigung": umlauts reduced to their base letter.
    folded = text.casefold().translate(str.maketrans("äöüß", "aous"))
    return "".join(ch for ch in folded if ch.isalnum())


def suggest_event_mapping(header: list[str]) -> dict[str, str]:
    """Column → event field for the columns whose header names one (German or English)."""
    resolved: dict[str, str] = {}
    for column in header:
        target = AUTO_MAP.get(_norm(column))
        if target and target not in resolved.values():
            resolved[column] = target
    return resolved


def resolve_event_mapping(header: list[str], mapping: dict[str, str] | None) -> dict[str, str]:
    """Column → field, refusing a mapping that cannot work before any row is read."""
    if mapping is None:
        resolved = suggest_event_mapping(header)
    else:
        resolved = {column: target for column, target in mapping.items() if target}
        for column, target in resolved.items():
            if target not in EVENT_FIELDS:
                raise ImportFileError(
                    N_("The mapping names %(field)s, which is not an event field to import."),
                    field=target,
                )
            if column not in header:
                raise ImportFileError(
                    N_("The mapping names the column %(column)s, which the file does not have."),
                    column=column,
                )
        targets = list(resolved.values())
        for target in targets:
            if targets.count(target) > 1:
                raise ImportFileError(N_("Two columns are mapped to %(field)s."), field=target)
    if not set(CONTACT_FIELDS) & set(resolved.values()):
        raise ImportFileError(
            N_("No column is mapped to the email address or the customer number.")
        )
    if "type" not in resolved.values():
        raise ImportFileError(N_("No column is mapped to the event type."))
    return resolved


def parse_time(text: str) -> datetime:
    """An aware time from ISO 8601 or ``DD.MM.YYYY [HH:MM[:SS]]``; no offset means Berlin."""
    match = GERMAN_TIME.fullmatch(text)
    try:
        if match:
            day, month, year, hour, minute, second = (int(p or 0) for p in match.groups())
            moment = datetime(year, month, day, hour, minute, second)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:  # also 31.02.2026 and 25:00
        raise ValueError(
            f"{text!r} is not a time as DD.MM.YYYY HH:MM or ISO 8601 (2026-03-01T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=BERLIN)


def parse_amount(text: str) -> str:
    """A decimal amount as text; German ``1.234,50`` and English ``1234.50`` both work."""
    cleaned = text.replace("€", "").replace("\u00a0", "").replace(" ", "")
    if "," in cleaned:
        cleaned = cleaned.replace(".", "").replace(",", ".")
    elif GERMAN_THOUSANDS.fullmatch(cleaned):
        cleaned = cleaned.replace(".", "")  # 1.234 is a German thousand, not 1.234 euros
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount such as 1.234,50 or 1234.50") from None
    return str(amount)


def _row_id(cells: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()
    return f"row-{digest[:40]}"


def _contact_id_by_number(session: Session, number: str) -> int | None:
    return session.scalar(select(Contact.id).where(Contact.customer_number == number))


def _item(session: Session, cells: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API item of one row, and the errors found before ``record_activities`` runs."""
    errors: dict[str, str] = {}
    item: dict[str, Any] = {}
    number = cells.get("customer_number", "")
    contact_id = _contact_id_by_number(session, number) if number else None
    if contact_id is not None:
        item["contact_id"] = contact_id
    elif cells.get("email"):
        item["email"] = cells["email"]
    elif number:
        errors["customer_number"] = "belongs to no contact; create the contact first"
    else:
        errors["email"] = "name the contact with an email address or a customer number"
    raw_type = cells.get("type", "")
    kind = TYPE_ALIASES.get(_norm(raw_type), raw_type or None)
    item["type"] = kind
    if cells.get("occurred_at"):
        try:
            item["occurred_at"] = parse_time(cells["occurred_at"]).isoformat()
        except ValueError as exc:
            errors["occurred_at"] = str(exc)
    item["id"] = cells.get("id") or _row_id(cells)
    for field in PAYLOAD_FIELDS:
        if cells.get(field):
            item[field] = cells[field]
    if "amount" in item:
        try:
            item["amount"] = parse_amount(item["amount"])
        except ValueError as exc:
            errors["amount"] = str(exc)
            del item["amount"]
    if "severity" in item:
        item["severity"] = SEVERITY_ALIASES.get(_norm(item["severity"]), item["severity"])
    if kind in ACTIVITY_TYPES and "currency" in ACTIVITY_TYPES[kind] and "currency" not in item:
        item["currency"] = DEFAULT_CURRENCY
    return item, errors


def _row_error(line: int, errors: dict[str, str], raw: dict[str, str]) -> RowError:
    order = {field: index for index, field in enumerate(EVENT_FIELDS)}
    fields = sorted(errors, key=lambda name: order.get(name, len(order)))
    message = "; ".join(f"{name}: {errors[name]}" for name in fields)
    return RowError(line, fields[0] or None, message, raw)


def import_activities(
    session: Session,
    data: bytes,
    *,
    mapping: dict[str, str] | None,
    now: datetime,
    source: str,
    batch_size: int = 500,
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Record every valid row of an events CSV file; the caller commits.

    ``created`` counts events recorded now, ``unchanged`` rows recorded by an earlier run (same
    id); ``updated`` stays 0, events are never changed. ``on_batch`` gets the running report
    after every ``batch_size`` rows and at the end, and may commit the session.
    """
    header, rows = read_csv(data)
    resolved = resolve_event_mapping(header, mapping)
    report = ImportReport(
        columns=header, ignored_columns=[c for c in header if c and c not in resolved]
    )
    for line, row in rows:
        report.rows += 1
        raw = {k: v for k, v in row.items() if k != RAGGED}
        if RAGGED in row:
            report.errors.append(RowError(line, None, row[RAGGED], raw))
        else:
            cells = {target: row.get(column, "").strip() for column, target in resolved.items()}
            item, errors = _item(session, cells)
            if not errors:
                try:
                    recorded = record_activities(session, [item], now=now, source=source)
                except ActivityError as exc:
                    # Keys are "0.field" (item index 0): the row's fields are what people know.
                    errors = {key.partition(".")[2]: msg for key, msg in exc.errors.items()}
                else:
                    if recorded[0] is None:
                        report.unchanged += 1
                    else:
                        report.created += 1
            if errors:
                report.errors.append(_row_error(line, errors, raw))
        if on_batch is not None and report.rows % batch_size == 0:
            on_batch(report)
    if on_batch is not None and report.rows % batch_size:
        on_batch(report)
    return report

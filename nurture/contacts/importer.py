"""Importing contacts from CSV files as German and English spreadsheets export them.

Every row goes through ``upsert_contact``, so an import never makes a duplicate and a re-run
changes nothing. An import never creates consent: a list of addresses is no proof that anyone
agreed to mail, so consent stays a separate, recorded act.

Decisions: an empty cell never erases data (spreadsheets leave cells empty for "unknown"); a row
that fails is skipped and reported with its physical line number while the good rows import;
``ImportReport.rows`` counts every data row read, errors included.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from nurture.contacts.fields import WRITABLE, ContactDataError, clean_contact_data
from nurture.contacts.store import find_existing, upsert_contact
from nurture.errors import N_, UserFacingError

# read_csv puts this key into a row whose cell count differs from the header's; its value is
# the problem. No header can be named so: NUL never passes decoding.
RAGGED = "\x00ragged"
SNIFF_CHARS = 8192
# custom and owner_id are not text; source is the import's own ``source`` argument.
IMPORTABLE = WRITABLE - {"custom", "owner_id", "source"}
# Normalised header (lower case, letters and digits only) → contact field.
AUTO_MAP = {
    **dict.fromkeys(["email", "mail", "emailadresse", "emailaddress", "mailadresse"], "email"),
    **dict.fromkeys(["vorname", "firstname", "givenname"], "first_name"),
    **dict.fromkeys(["nachname", "name", "lastname", "surname", "familienname"], "last_name"),
    **dict.fromkeys(["anrede", "salutation", "geschlecht", "gender"], "gender"),
    **dict.fromkeys(["titel", "title"], "title"),
    **dict.fromkeys(["firma", "unternehmen", "company", "firmenname"], "company"),
    **dict.fromkeys(["kundennummer", "customernumber", "kundennr"], "customer_number"),
    **dict.fromkeys(["telefon", "phone", "telefonnummer", "tel"], "phone"),
    **dict.fromkeys(["mobil", "mobile", "handy", "mobilnummer"], "mobile"),
    **dict.fromkeys(["ort", "stadt", "city", "wohnort"], "city"),
    **dict.fromkeys(["land", "country", "laendercode"], "country"),
    **dict.fromkeys(["sprache", "language"], "language"),
    **dict.fromkeys(["geburtstag", "birthday", "geburtsdatum", "dateofbirth"], "birthday"),
    **dict.fromkeys(["tags", "schlagworte"], "tags"),
    **dict.fromkeys(["dusie", "ansprache", "formality"], "formality"),
}
GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")


class ImportFileError(UserFacingError):
    """The file as a whole cannot be imported; nothing was touched."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str | None
    message: str
    raw: dict[str, str]


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        # cp1252 decodes almost any bytes; NUL is the sign of a binary file (xlsx, zip, UTF-16).
        if "\x00" not in text:
            return text
    raise ImportFileError(N_("The file is neither UTF-8 nor Windows-1252 text."))


def read_csv(data: bytes) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and the data rows as (physical line of the row's start, {column: cell}).

    A row with more or fewer cells than the header carries ``RAGGED`` (the problem) and its
    cells under the columns they fill; extra cells are kept under "column N".
    """
    text = _decode(data)
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut-off last line would skew the counts
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=";,\t").delimiter
    except csv.Error:
        delimiter = ";"  # what German Excel writes
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [cell.strip() for cell in next(reader, [])]
    if not any(header):
        raise ImportFileError(N_("The file is empty."))
    named = [column for column in header if column]
    for column in named:
        if named.count(column) > 1:
            raise ImportFileError(
                N_("The header names the column %(column)s twice."), column=column
            )

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank lines and Excel's trailing ";;;" rows
            row = dict(zip(header, cells, strict=False))
            if len(cells) != len(header):
                row |= {f"column {i + 1}": c for i, c in enumerate(cells) if i >= len(header)}
                row[RAGGED] = f"the row has {len(cells)} cells, the header {len(header)}"
            yield start, row

    return header, rows()


def _norm(header: str) -> str:
    return "".join(ch for ch in header.casefold() if ch.isalnum())


def _resolve(header: list[str], mapping: dict[str, str] | None) -> dict[str, str]:
    """Column → field, refusing a mapping that cannot be right before any row is read."""
    if mapping is None:
        resolved: dict[str, str] = {}
        for column in header:
            target = AUTO_MAP.get(_norm(column))
            # The first column wins ("Name" and "Nachname" both mean last_name).
            if target and target not in resolved.values():
                resolved[column] = target
    else:
        resolved = dict(mapping)
        for column, target in resolved.items():
            if target not in IMPORTABLE:
                raise ImportFileError(
                    N_("The mapping names %(field)s, which is not a contact field to import."),
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
    if "email" not in resolved.values():
        raise ImportFileError(N_("No column is mapped to the email address."))
    return resolved


def _value(target: str, cell: str) -> Any:
    if target == "tags":
        return [tag for tag in re.split(r"[,|]", cell) if tag.strip()]
    if target == "birthday":
        match = GERMAN_DATE.fullmatch(cell)
        try:
            if match:
                day, month, year = (int(part) for part in match.groups())
                return date(year, month, day)
            return date.fromisoformat(cell)
        except ValueError:  # also 31.02.2020
            raise ValueError(f"{cell!r} is not a date as DD.MM.YYYY or YYYY-MM-DD") from None
    return cell


def _row_values(row: dict[str, str], mapping: dict[str, str]) -> dict[str, Any]:
    """Cleaned values of a row; ContactDataError names the failing fields in column order."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for column, target in mapping.items():
        cell = row.get(column, "").strip()
        if not cell:
            continue
        try:
            data[target] = _value(target, cell)
        except ValueError as exc:
            errors[target] = str(exc)
    try:
        values = clean_contact_data(data, require_email=True)
    except ContactDataError as exc:
        errors |= exc.errors
    if errors:
        order = list(mapping.values())
        raise ContactDataError(dict(sorted(errors.items(), key=lambda i: order.index(i[0]))))
    return values


def _snapshot(contact: Any, fields: list[str]) -> dict[str, Any]:
    return {name: _copy(getattr(contact, name)) for name in fields}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _import_row(
    session: Session, report: ImportReport, values: dict[str, Any], *, now: datetime, source: str
) -> None:
    fields = list(values)
    before = find_existing(session, values["email"], values.get("customer_number"))
    snapshot = _snapshot(before, fields) if before is not None else None
    # A savepoint per row: a row the database refuses is undone alone, the others stay.
    with session.begin_nested():
        contact, created = upsert_contact(session, values, now=now, source=source)
    if created:
        report.created += 1
    elif contact is before and _snapshot(contact, fields) == snapshot:
        report.unchanged += 1
    else:
        report.updated += 1


def _hold_transaction(session: Session) -> None:
    # pysqlite opens no transaction before a SAVEPOINT, and releasing a savepoint that opened
    # one commits it: without this BEGIN every row would commit on its own on SQLite.
    connection = session.connection()
    driver = connection.connection.dbapi_connection
    if connection.dialect.name == "sqlite" and not getattr(driver, "in_transaction", True):
        connection.exec_driver_sql("BEGIN")


def import_contacts(
    session: Session,
    data: bytes,
    *,
    mapping: dict[str, str] | None,
    now: datetime,
    source: str,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of a CSV file; the caller commits."""
    header, rows = read_csv(data)
    resolved = _resolve(header, mapping)
    report = ImportReport(
        columns=header, ignored_columns=[c for c in header if c and c not in resolved]
    )
    _hold_transaction(session)
    for line, row in rows:
        report.rows += 1
        raw = {k: v for k, v in row.items() if k != RAGGED}
        if RAGGED in row:
            report.errors.append(RowError(line, None, row[RAGGED], raw))
        else:
            try:
                _import_row(session, report, _row_values(row, resolved), now=now, source=source)
            except ContactDataError as exc:
                name, message = next(iter(exc.errors.items()))
                report.errors.append(RowError(line, name, f"{name}: {message}", raw))
            except (IntegrityError, DataError):
                message = "the database refused the row (email or customer number conflict)"
                report.errors.append(RowError(line, None, message, raw))
        if progress is not None and report.rows % batch_size == 0:
            progress(report.rows)
    if progress is not None and report.rows % batch_size:
        progress(report.rows)
    return report


def _safe(cell: str) -> str:
    # Excel runs a cell that starts like a formula; the quote makes it text (CSV injection).
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def errors_csv(report: ImportReport) -> str:
    """The failed rows with line, field and message, for Excel: ';', UTF-8 with BOM."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow([_safe(c) for c in ["line", "field", "message", *report.columns]])
    for error in report.errors:
        extra = [v for k, v in error.raw.items() if k not in report.columns]
        cells = [str(error.line), error.field or "", error.message]
        cells += [error.raw.get(c, "") for c in report.columns] + extra
        writer.writerow([_safe(c) for c in cells])
    return "\ufeff" + out.getvalue()

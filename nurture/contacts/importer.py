"""Importing contacts from CSV files as German and English spreadsheets export them.

Every row goes through ``upsert_contact``, so an import never makes a duplicate and a re-run
changes nothing. An import never creates consent by itself: a list of addresses is no proof that
anyone agreed to mail. Only a ``RowExtension`` (``nurture.consent.imported``, given a proof
reference for the whole file) records consent, and a column mapped to ``consent`` without one
refuses the file.

Decisions: an empty cell never erases data (spreadsheets leave cells empty for "unknown"); a row
that fails is skipped and reported with its physical line number while the good rows import;
``ImportReport.rows`` counts every data row read, errors included.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import String, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from nurture.consent.suppression import (
    SUPPRESSED_MESSAGE,
    address_hash,
    is_suppressed,
    suppressed_hashes,
)
from nurture.contacts.custom_fields import Definitions, definitions, parse_date
from nurture.contacts.fields import WRITABLE, ContactDataError, clean_contact_data
from nurture.contacts.models import Contact, Lifecycle
from nurture.contacts.store import find_existing, upsert_contact
from nurture.errors import N_, UserFacingError
from nurture.events import append_events

# read_csv puts this key into a row whose cell count differs from the header's; its value is
# the problem. No header can be named so: NUL never passes decoding.
RAGGED = "\x00ragged"
SUPPRESSED_ROW = f"email: {SUPPRESSED_MESSAGE}"
SNIFF_CHARS = 8192
# pg_advisory_xact_lock key of contact imports (any constant unique within nurture).
IMPORT_LOCK = 0x6E75_7274_0001
# custom and owner_id are not text; source is the import's own ``source`` argument.
IMPORTABLE = WRITABLE - {"custom", "owner_id", "source"}
# The target of a column that says per row whether the person consented; never contact data.
CONSENT = "consent"
NEEDS_PROOF = N_(
    "A column is mapped to consent, but consent needs a proof reference: where, when and with "
    "which text it was collected."
)
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


class ImportFileError(UserFacingError):
    """The file as a whole cannot be imported; nothing was touched."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str | None
    message: str
    raw: dict[str, str]


@dataclass(frozen=True)
class RowNote:
    """Something to know about a row that imported, e.g. a consent left out; not an error."""

    line: int
    message: str


@dataclass(frozen=True)
class Applied:
    """A row a batch wrote: its contact, and its cells of the extension's columns."""

    line: int
    contact_id: int
    cells: dict[str, str]


@dataclass
class Outcome:
    """What a ``RowExtension`` did with a batch: (contact, topic) pairs recorded or skipped."""

    consents_imported: int = 0
    consents_skipped: int = 0
    notes: list[RowNote] = field(default_factory=list)


class RowExtension(Protocol):
    """More than contact data per row (consent with a proof reference: consent.imported).

    The importer takes the columns mapped to ``targets`` out of the contact data, has
    ``check_row`` refuse bad cells as row errors, and after a batch wrote its contacts hands the
    rows with their contact ids to ``apply``, inside the batch's savepoint: when the batch falls
    back to the careful row-by-row path, the extension's part is redone with it.
    """

    targets: frozenset[str]

    def suggest(self, header: list[str]) -> dict[str, str]:
        """Columns to map to the extension's targets when the caller gave no mapping."""
        ...

    def check_mapping(self, targets: Collection[str]) -> None:
        """ImportFileError when the mapped targets do not fit (before any row is read)."""
        ...

    def check_row(self, cells: dict[str, str]) -> tuple[str, str] | None:
        """(field, message) of a cell that makes the row fail, or None."""
        ...

    def prepare(self, session: Session) -> None:
        """Once per batch, before any savepoint: write what the batch's rows will refer to."""
        ...

    def apply(self, session: Session, rows: list[Applied]) -> Outcome:
        """Act on rows the batch wrote; may raise IntegrityError to have them retried."""
        ...


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    consents_imported: int = 0
    consents_skipped: int = 0
    notes: list[RowNote] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    def add(self, outcome: Outcome) -> None:
        self.consents_imported += outcome.consents_imported
        self.consents_skipped += outcome.consents_skipped
        self.notes.extend(outcome.notes)


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
        # The sniffer wants consistent rows; a file with one ragged row defeats it. The header
        # line decides then (ties go to ';', what German Excel writes).
        first_line = sample.split("\n", 1)[0]
        delimiter = max(";,\t", key=first_line.count)
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


def importable_fields(custom_fields: Definitions) -> list[str]:
    """Every target a column can be mapped to: contact fields, ``custom.<key>``, then consent
    (which needs a proof reference for the file)."""
    return sorted(IMPORTABLE) + [f"custom.{key}" for key in custom_fields] + [CONSENT]


def suggest_mapping(header: list[str], custom_fields: Definitions) -> dict[str, str]:
    """Column → field for the columns whose header names a field (German or English)."""
    auto = dict(AUTO_MAP)
    for key, definition in custom_fields.items():
        auto.setdefault(_norm(key), f"custom.{key}")
        auto.setdefault(_norm(definition.label), f"custom.{key}")
    resolved: dict[str, str] = {}
    for column in header:
        target = auto.get(_norm(column))
        # The first column wins ("Name" and "Nachname" both mean last_name).
        if target and target not in resolved.values():
            resolved[column] = target
    return resolved


def check_extension_targets(targets: Collection[str], extension: RowExtension | None) -> None:
    """Refuse consent (or another extension's target) mapped without its extension."""
    if extension is None:
        if CONSENT in targets:
            raise ImportFileError(NEEDS_PROOF)
        return
    extension.check_mapping(targets)


def _resolve(
    header: list[str],
    mapping: dict[str, str] | None,
    custom_fields: Definitions,
    extension: RowExtension | None = None,
) -> dict[str, str]:
    """Column → field, refusing a mapping that cannot be right before any row is read."""
    if mapping is None:
        resolved = suggest_mapping(header, custom_fields)
        if extension is not None:
            resolved |= {
                column: target
                for column, target in extension.suggest(header).items()
                if column not in resolved and target not in resolved.values()
            }
    else:
        resolved = {column: target for column, target in mapping.items() if target}
        allowed = set(importable_fields(custom_fields))
        for column, target in resolved.items():
            if target not in allowed:
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
    check_extension_targets(resolved.values(), extension)
    return resolved


def _value(target: str, cell: str) -> Any:
    if target == "tags":
        return [tag for tag in re.split(r"[,|]", cell) if tag.strip()]
    if target == "birthday":
        return parse_date(cell)
    return cell


def _row_values(
    row: dict[str, str], mapping: dict[str, str], custom_fields: Definitions
) -> dict[str, Any]:
    """Cleaned values of a row; ContactDataError names the failing fields in column order."""
    data: dict[str, Any] = {}
    custom: dict[str, str] = {}
    errors: dict[str, str] = {}
    for column, target in mapping.items():
        cell = row.get(column, "").strip()
        if not cell:
            continue
        if target.startswith("custom."):
            custom[target[7:]] = cell
            continue
        try:
            data[target] = _value(target, cell)
        except ValueError as exc:
            errors[target] = str(exc)
    if custom:
        data["custom"] = custom
    try:
        values = clean_contact_data(data, require_email=True, custom_fields=custom_fields)
    except ContactDataError as exc:
        errors |= exc.errors
    if errors:
        order = list(mapping.values())
        ranked = sorted(errors.items(), key=lambda i: order.index(i[0]) if i[0] in order else 0)
        raise ContactDataError(dict(ranked))
    return values


def _snapshot(contact: Any, fields: list[str]) -> dict[str, Any]:
    return {name: _copy(getattr(contact, name)) for name in fields}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class _Row:
    line: int
    values: dict[str, Any]
    raw: dict[str, str]
    # The cells of the extension's columns, by target.
    extra: dict[str, str] = field(default_factory=dict)


def _import_row(
    session: Session,
    report: ImportReport,
    row: _Row,
    *,
    now: datetime,
    source: str,
    custom_fields: Definitions,
    suppression_secret: str | None = None,
    extension: RowExtension | None = None,
) -> None:
    """The careful path, one row at a time: what the fast path falls back to on a conflict."""
    values = row.values
    fields = list(values)
    try:
        before = find_existing(session, values["email"], values.get("customer_number"))
        if (
            before is None
            and suppression_secret is not None
            and is_suppressed(session, secret=suppression_secret, email=values["email"])
        ):
            report.errors.append(RowError(row.line, "email", SUPPRESSED_ROW, row.raw))
            return
        snapshot = _snapshot(before, fields) if before is not None else None
        # A savepoint per row: a row the database refuses is undone alone, the others stay.
        with session.begin_nested():
            contact, created = upsert_contact(
                session, values, now=now, source=source, custom_fields=custom_fields
            )
            if extension is not None:
                outcome = extension.apply(session, [Applied(row.line, contact.id, row.extra)])
    except ContactDataError as exc:
        name, message = next(iter(exc.errors.items()))
        report.errors.append(RowError(row.line, name, f"{name}: {message}", row.raw))
        return
    except (IntegrityError, DataError):
        message = "the database refused the row (email or customer number conflict)"
        report.errors.append(RowError(row.line, None, message, row.raw))
        return
    if extension is not None:
        report.add(outcome)
    if created:
        report.created += 1
    elif contact is before and _snapshot(contact, fields) == snapshot:
        report.unchanged += 1
    else:
        report.updated += 1


_CONTACTS = Contact.__table__


def _column_defaults() -> dict[str, Any]:
    """What an INSERT of a new contact needs for the columns a row leaves out."""
    defaults: dict[str, Any] = {}
    for column in _CONTACTS.columns:
        if column.primary_key or column.name in ("created_at", "updated_at", "source"):
            continue
        default = column.default
        if default is None:
            defaults[column.name] = None
        elif default.is_callable:
            defaults[column.name] = default.arg(None)  # type: ignore[attr-defined]
        else:
            defaults[column.name] = default.arg  # type: ignore[attr-defined]
    defaults["lifecycle"] = Lifecycle.LEAD
    return defaults


def _merged(field: str, current: Any, value: Any) -> Any:
    # The same rules as store._apply: tags are merged, custom values merged, None removes.
    if field == "tags":
        return sorted(set(current or []) | set(value))
    if field == "custom":
        merged = {**(current or {}), **value}
        return {key: item for key, item in merged.items() if item is not None}
    return value


def _split_repeats(rows: list[_Row]) -> tuple[list[_Row], list[_Row]]:
    """Rows with distinct emails and customer numbers, and the rest for a later pass.

    A later row about the same person must see the earlier one's result, as in a row-by-row
    import; a second pass gives it that without per-row queries.
    """
    seen: set[tuple[str, str]] = set()
    first: list[_Row] = []
    later: list[_Row] = []
    for row in rows:
        keys = {("e", row.values["email"])}
        if row.values.get("customer_number"):
            keys.add(("c", row.values["customer_number"]))
        if keys & seen:
            later.append(row)
        else:
            seen |= keys
            first.append(row)
    return first, later


class _Batch:
    """Applies validated rows with a handful of statements per batch instead of ~7 per row."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        *,
        now: datetime,
        source: str,
        custom_fields: Definitions,
        suppression_secret: str | None = None,
        extension: RowExtension | None = None,
    ) -> None:
        self.session = session
        self.report = report
        self.now = now
        self.source = source
        self.custom_fields = custom_fields
        self.suppression_secret = suppression_secret
        self.extension = extension
        self.defaults = _column_defaults()
        dialect = session.get_bind().dialect.name
        self.postgres = dialect == "postgresql"
        insert = pg_insert if self.postgres else sqlite_insert
        self.insert = (
            insert(_CONTACTS).on_conflict_do_nothing().returning(_CONTACTS.c.id, _CONTACTS.c.email)
        )

    def apply(self, rows: list[_Row]) -> None:
        pending = rows
        while pending:
            distinct, pending = _split_repeats(pending)
            try:
                with self.session.begin_nested():
                    self._apply_distinct(distinct)
            except (IntegrityError, DataError):
                # Another writer got in between (or a value the checks missed): the careful
                # path sorts it out row by row.
                for row in distinct:
                    self._careful(row)

    def _careful(self, row: _Row) -> None:
        _import_row(
            self.session,
            self.report,
            row,
            now=self.now,
            source=self.source,
            custom_fields=self.custom_fields,
            suppression_secret=self.suppression_secret,
            extension=self.extension,
        )

    def _suppressed(self, rows: list[_Row]) -> set[str]:
        """The emails of ``rows`` on the suppression list: one query per batch."""
        if self.suppression_secret is None or not rows:
            return set()
        secret = self.suppression_secret
        by_hash = {address_hash(secret, row.values["email"]): row.values["email"] for row in rows}
        return {by_hash[digest] for digest in suppressed_hashes(self.session, by_hash)}

    def _apply_distinct(self, rows: list[_Row]) -> None:
        emails = [row.values["email"] for row in rows]
        numbers = [n for row in rows if (n := row.values.get("customer_number"))]
        condition = self._among(_CONTACTS.c.email, emails)
        if numbers:
            condition = or_(condition, self._among(_CONTACTS.c.customer_number, numbers))
        found = self.session.execute(select(_CONTACTS).where(condition)).mappings().all()
        by_email = {contact["email"]: contact for contact in found}
        by_number = {c["customer_number"]: c for c in found if c["customer_number"]}

        new: list[_Row] = []
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        counts = {"updated": 0, "unchanged": 0}
        errors: list[RowError] = []
        applied: list[Applied] = []
        for row in rows:
            values = row.values
            number = values.get("customer_number")
            # The customer number wins, as in store.find_existing.
            target = (by_number.get(number) if number else None) or by_email.get(values["email"])
            if target is None:
                new.append(row)
                continue
            owner = by_email.get(values["email"])
            if owner is not None and owner["id"] != target["id"]:
                message = "email: belongs to another contact"
                errors.append(RowError(row.line, "email", message, row.raw))
                continue
            applied.append(Applied(row.line, target["id"], row.extra))
            changes = {}
            for name, value in values.items():
                merged = _merged(name, target[name], value)
                if merged != target[name]:
                    changes[name] = merged
            if not changes:
                counts["unchanged"] += 1
                continue
            counts["updated"] += 1
            changes["updated_at"] = self.now
            updates.setdefault(tuple(sorted(changes)), []).append(
                {"_id": target["id"]} | {f"v_{field}": value for field, value in changes.items()}
            )
        # A suppressed address may not come back as a new contact (unsubscribed, bounced or
        # erased); a contact that is still there stays updatable.
        if blocked := self._suppressed(new):
            errors.extend(
                RowError(row.line, "email", SUPPRESSED_ROW, row.raw)
                for row in new
                if row.values["email"] in blocked
            )
            new = [row for row in new if row.values["email"] not in blocked]

        for fields, params in updates.items():
            stmt = (
                update(_CONTACTS)
                .where(_CONTACTS.c.id == bindparam("_id"))
                .values({name: bindparam(f"v_{name}") for name in fields})
            )
            self.session.execute(stmt, params)
        created = self._insert(new) if new else []
        outcome = None
        if self.extension is not None:
            ids = {email: cid for cid, email in created}
            applied += [
                Applied(row.line, ids[row.values["email"]], row.extra)
                for row in new
                if row.values["email"] in ids
            ]
            outcome = self.extension.apply(self.session, applied)
        # Counted only now: the savepoint may still be rolled back and the rows retried.
        self.report.updated += counts["updated"]
        self.report.unchanged += counts["unchanged"]
        self.report.errors.extend(errors)
        self.report.created += len(created)
        if outcome is not None:
            self.report.add(outcome)
        lost = {row.values["email"] for row in new} - {email for _id, email in created}
        for row in new:
            if row.values["email"] in lost:
                self._careful(row)

    def _among(self, column: Any, values: list[str]) -> Any:
        if self.postgres:
            # One array parameter instead of 1,000 placeholders: psycopg parses the text of
            # every statement whose SQL is too long for its cache, which dominated the import.
            # A semi-join against unnest, not "= ANY(array)": once psycopg prepares the statement,
            # a generic plan on a table without statistics yet (a first import, one transaction)
            # scans the table and compares every row with each of the 1,000 keys in turn.
            keys = select(func.unnest(bindparam(None, values, type_=ARRAY(String()))))
            return column.in_(keys.scalar_subquery())
        return column.in_(values)

    def _insert(self, rows: list[_Row]) -> list[tuple[int, str]]:
        if self.postgres:
            return self._insert_postgres(rows)
        params = [
            self.defaults
            | {"source": self.source, "created_at": self.now, "updated_at": self.now}
            | row.values
            for row in rows
        ]
        created = [(r.id, r.email) for r in self.session.execute(self.insert, params)]
        append_events(
            self.session,
            [
                {"type": "contact_created", "contact_id": cid, "payload": {"source": self.source}}
                for cid, _email in created
            ],
            now=self.now,
        )
        return created

    def _insert_postgres(self, rows: list[_Row]) -> list[tuple[int, str]]:
        """The new contacts and their contact_created events in one statement.

        Each column travels as one array parameter and ``unnest`` turns them back into rows, so
        the statement text stays short whatever the batch size. The text is built from the
        model's column names only; every value is a bound parameter.
        """
        columns = list(self.defaults)
        params: dict[str, Any] = {"source": self.source, "now": self.now}
        for name in columns:
            cells = [row.values.get(name, self.defaults[name]) for row in rows]
            if name in ("tags", "custom"):
                cells = [json.dumps(cell) for cell in cells]
            elif name == "lifecycle":
                cells = [Lifecycle(cell).value for cell in cells]
            params[f"a_{name}"] = cells
        params["payload"] = json.dumps({"source": self.source})
        arrays = ", ".join(f"CAST(:a_{n} AS {_PG_ARRAY[n]})" for n in columns)
        names = ", ".join(columns)
        picked = ", ".join(
            f"CAST(t.{n} AS json)" if n in ("tags", "custom") else f"t.{n}" for n in columns
        )
        sql = f"""
            WITH new AS (
                INSERT INTO contacts ({names}, source, created_at, updated_at)
                SELECT {picked}, :source, :now, :now FROM unnest({arrays}) AS t({names})
                ON CONFLICT DO NOTHING
                RETURNING id, email
            ), logged AS (
                INSERT INTO events (contact_id, type, occurred_at, recorded_at, payload)
                SELECT id, 'contact_created', :now, :now, CAST(:payload AS jsonb) FROM new
            )
            SELECT id, email FROM new
        """
        return [(r.id, r.email) for r in self.session.execute(text(sql), params)]


def _pg_array_type(column: Any) -> str:
    if column.foreign_keys:  # typed by the referenced column, not yet resolved at import time
        return "bigint[]"
    kind = getattr(column.type, "impl", column.type)  # TypeDecorators (UtcDateTime) by impl
    try:
        python_type = kind.python_type
    except NotImplementedError:
        python_type = str
    if python_type is datetime:
        return "timestamptz[]"
    if python_type is date:
        return "date[]"
    if python_type is bool:
        return "boolean[]"
    if python_type is int:
        return "bigint[]"
    # JSON travels as text and is cast per row; enums are VARCHAR with a CHECK.
    return "text[]"


_PG_ARRAY = {column.name: _pg_array_type(column) for column in _CONTACTS.columns}


def _hold_transaction(session: Session) -> None:
    # pysqlite opens no transaction before a SAVEPOINT, and releasing a savepoint that opened
    # one commits it: without this BEGIN every row would commit on its own on SQLite.
    # IMMEDIATE takes the write lock now: two imports that both read first and then both try to
    # write would otherwise deadlock, and SQLite answers that with "database is locked" at once
    # instead of waiting out the busy timeout.
    # On PostgreSQL, imports take turns per transaction: two imports of overlapping files that
    # each hold the keys they inserted until commit would otherwise deadlock on each other's
    # unique-index entries. Worker imports commit per batch, so they interleave batch by batch.
    connection = session.connection()
    driver = connection.connection.dbapi_connection
    if connection.dialect.name == "sqlite" and not getattr(driver, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(IMPORT_LOCK)))


def import_contacts(
    session: Session,
    data: bytes,
    *,
    mapping: dict[str, str] | None,
    now: datetime,
    source: str,
    batch_size: int = 1000,
    on_batch: Callable[[ImportReport], None] | None = None,
    custom_fields: Definitions | None = None,
    suppression_secret: str | None = None,
    extension: RowExtension | None = None,
) -> ImportReport:
    """Upsert every valid row of a CSV file; the caller commits.

    ``on_batch(report)`` runs after each batch with the running report; it may commit (worker
    imports do, so a long import holds no long transaction and shows its progress).
    With ``suppression_secret`` (``settings.suppression_secret``; every adapter passes it) a
    row that would create a contact with a suppressed address is a row error instead.
    ``extension`` handles the columns mapped to its targets (consent with a proof reference).
    """
    header, rows = read_csv(data)
    defs = definitions(session) if custom_fields is None else custom_fields
    resolved = _resolve(header, mapping, defs, extension)
    targets = extension.targets if extension is not None else frozenset()
    extra_columns = {c: t for c, t in resolved.items() if t in targets}
    contact_columns = {c: t for c, t in resolved.items() if t not in targets}
    report = ImportReport(
        columns=header, ignored_columns=[c for c in header if c and c not in resolved]
    )
    batch = _Batch(
        session,
        report,
        now=now,
        source=source,
        custom_fields=defs,
        suppression_secret=suppression_secret,
        extension=extension,
    )
    pending: list[_Row] = []

    def flush() -> None:
        _hold_transaction(session)
        if extension is not None:
            extension.prepare(session)
        batch.apply(pending)
        pending.clear()
        report.errors.sort(key=lambda error: error.line)
        report.notes.sort(key=lambda note: note.line)
        if on_batch is not None:
            on_batch(report)

    for line, row in rows:
        report.rows += 1
        raw = {k: v for k, v in row.items() if k != RAGGED}
        if RAGGED in row:
            report.errors.append(RowError(line, None, row[RAGGED], raw))
        else:
            try:
                values = _row_values(row, contact_columns, defs)
            except ContactDataError as exc:
                name, message = next(iter(exc.errors.items()))
                report.errors.append(RowError(line, name, f"{name}: {message}", raw))
            else:
                extra = {t: row.get(c, "").strip() for c, t in extra_columns.items()}
                problem = extension.check_row(extra) if extension is not None else None
                if problem is not None:
                    name, message = problem
                    report.errors.append(RowError(line, name, f"{name}: {message}", raw))
                else:
                    pending.append(_Row(line, values, raw, extra))
        if report.rows % batch_size == 0:
            flush()
    if pending or report.rows % batch_size:
        flush()
    # The batches wrote with Core statements; objects loaded before must not show old values.
    session.expire_all()
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

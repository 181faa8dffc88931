"""Contact figures for `make bench`.

Import: a generated 100,000-row CSV as a German ERP exports it (';', Windows-1252, 10% rows
repeating an earlier customer, 1% invalid rows) through ``import_contacts``, against a baseline in
the same run: a plain ``executemany`` INSERT of the same rows' valid, distinct values into an empty
contacts table — what the database itself can take, with no parsing, validation or de-duplication.

Segment count: a segment with a field condition and a behaviour condition over 1,000,000 contacts
and their events on PostgreSQL, generated in SQL.
"""

from __future__ import annotations

import csv
import io
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text

from nurture.contacts.importer import import_contacts
from nurture.contacts.models import Contact, Lifecycle
from nurture.db import Database
from nurture.migrate import upgrade

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
SEGMENT_CONTACTS = int(os.environ.get("BENCH_SEGMENT_CONTACTS", "1000000"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HEADER = ["E-Mail", "Anrede", "Titel", "Vorname", "Nachname", "Firma", "Kundennummer", "Ort"]
HEADER += ["Geburtstag", "Tags"]
FIRST = ["Anna", "Jürgen", "Björn", "Sophie", "Mehmet", "Lena", "Tom", "Özlem", "Karl", "Eva"]
LAST = ["Müller", "Schmidt", "Weiß", "Groß", "Öztürk", "Becker", "Schäfer", "Koch", "Wagner"]
ASCII = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
CITIES = ["München", "Köln", "Düsseldorf", "Berlin", "Nürnberg", "Lübeck"]


def generate_csv(rows: int, seed: int = 7) -> tuple[bytes, list[dict[str, Any]]]:
    """The CSV bytes and the baseline's rows (valid, one per distinct customer)."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(HEADER)
    distinct: list[list[str]] = []
    baseline: list[dict[str, Any]] = []
    for i in range(rows):
        if i % 100 == 99:  # 1% invalid: a broken address or an impossible date
            bad = i % 200 == 99
            writer.writerow(
                [
                    f"kaputt{i}@@example.com" if bad else f"ok{i}@firma.example",
                    "Frau",
                    "",
                    "Anna",
                    "Fehler",
                    "ACME",
                    f"X{i}",
                    "Köln",
                    "1980-01-01" if bad else "31.02.1980",
                    "",
                ]
            )
            continue
        if distinct and rng.random() < 0.1:  # 10%: the same customer again, some data changed
            row = list(rng.choice(distinct))
            row[0] = row[0].upper() if rng.random() < 0.5 else row[0]
            row[7] = rng.choice(CITIES)
            writer.writerow(row)
            continue
        first, last = rng.choice(FIRST), rng.choice(LAST)
        female = first in ("Anna", "Sophie", "Lena", "Özlem", "Eva")
        row = [
            f"{first}.{last}.{i}@kunde{i % 997}.example".lower().translate(ASCII),
            "Frau" if female else "Herr",
            "Dr." if i % 17 == 0 else "",
            first,
            last,
            f"{last} & Söhne GmbH",
            f"K{i:07d}",
            rng.choice(CITIES),
            f"{1 + i % 28:02d}.{1 + i % 12:02d}.{1950 + i % 50}",
            "stammkunde|newsletter" if i % 3 == 0 else "",
        ]
        distinct.append(row)
        writer.writerow(row)
        baseline.append(
            {
                "email": row[0],
                "first_name": first,
                "last_name": last,
                "gender": "female" if female else "male",
                "title": row[2],
                "formality": "formal",
                "language": "de",
                "company": row[5],
                "industry": "",
                "company_size": "",
                "city": row[7],
                "country": "",
                "customer_number": row[6],
                "phone": "",
                "mobile": "",
                "website": "",
                "linkedin": "",
                "xing": "",
                "tags": row[9].split("|") if row[9] else [],
                "custom": {},
                "lifecycle": Lifecycle.LEAD,
                "source": "bench",
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    return out.getvalue().encode("cp1252"), baseline


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_import(make_url: Callable[[str], tuple[str, Callable[[], None]]]) -> dict[str, float]:
    """rows/s of the import and of the plain insert, on a fresh database each."""
    data, baseline = generate_csv(ROWS)
    url, drop = make_url("baseline")
    try:
        upgrade(url)
        db = Database(url)
        with db.engine.begin() as connection:
            plain_s = _timed(lambda: connection.execute(insert(Contact.__table__), baseline))
        db.dispose()
    finally:
        drop()
    url, drop = make_url("import")
    try:
        upgrade(url)
        db = Database(url)
        with db.session_scope() as session:

            def run() -> None:
                report = import_contacts(session, data, mapping=None, now=NOW, source="bench")
                expected_errors = ROWS // 100
                assert len(report.errors) == expected_errors, (len(report.errors), ROWS)
                session.commit()

            import_s = _timed(run)
        with db.engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM contacts")).scalar_one()
        assert stored == len(baseline), (stored, len(baseline))
        db.dispose()
    finally:
        drop()
    return {"import_rows_per_s": ROWS / import_s, "plain_rows_per_s": len(baseline) / plain_s}


def fill_segment_data(db: Database, contacts: int) -> None:
    """``contacts`` contacts, a third with orders over the last two years, some complaints."""
    with db.engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO contacts (email, first_name, last_name, gender, title, formality,
                  language, company, industry, company_size, city, country, customer_number,
                  phone, mobile, website, linkedin, xing, tags, custom, lifecycle, source,
                  created_at, updated_at)
                SELECT 'c' || g || '@kunde' || (g % 1000) || '.example', 'Anna',
                  'Müller' || (g % 500),
                  CASE WHEN g % 2 = 0 THEN 'female' ELSE 'male' END, '', 'formal', 'de',
                  'Firma ' || (g % 5000), '', '', (ARRAY['Berlin','Köln','München'])[1 + g % 3],
                  'DE', NULL, '', '', '', '', '',
                  CASE WHEN g % 10 = 0 THEN '["vip"]' ELSE '[]' END::json, '{}'::json,
                  (ARRAY['lead','customer','customer','at_risk','churned'])[1 + g % 5],
                  'bench', :now, :now
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": contacts, "now": NOW},
        )
        connection.execute(
            text(
                """
                INSERT INTO events (contact_id, type, occurred_at, recorded_at, payload)
                SELECT c.id, 'order', :now - (((c.id * 7919) % 730) || ' days')::interval, :now,
                  '{}'::jsonb
                FROM contacts c WHERE c.id % 3 = 0
                UNION ALL
                SELECT c.id, 'complaint', :now - (((c.id * 31) % 120) || ' days')::interval, :now,
                  '{}'::jsonb
                FROM contacts c WHERE c.id % 11 = 0
                UNION ALL
                SELECT c.id, 'complaint', :now - (((c.id * 17) % 200) || ' days')::interval, :now,
                  '{}'::jsonb
                FROM contacts c WHERE c.id % 22 = 0
                """
            ),
            {"now": NOW},
        )
        connection.execute(text("ANALYZE"))


def time_count(db: Database, definition: dict[str, Any], repeats: int = 3) -> tuple[float, int]:
    """The best of ``repeats`` segment counts (seconds) and the count."""
    from nurture.contacts.custom_fields import definitions
    from nurture.contacts.segments import count_matching

    best = float("inf")
    count = 0
    for _ in range(repeats):
        with db.session_scope() as session:
            definitions(session)
            started = time.perf_counter()
            count = count_matching(session, definition, now=NOW)
            best = min(best, time.perf_counter() - started)
    return best, count


WIN_BACK_SEGMENT = {
    "match": "all",
    "conditions": [
        {"field": "lifecycle", "op": "in", "value": ["customer", "at_risk"]},
        {"event": "order", "op": "none_within_days", "days": 180},
        {"event": "complaint", "op": "at_least", "count": 2, "days": 90},
    ],
}
SIMPLE_SEGMENT = {
    "match": "all",
    "conditions": [
        {"field": "city", "op": "eq", "value": "Köln"},
        {"event": "order", "op": "none_within_days", "days": 180},
    ],
}

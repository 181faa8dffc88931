"""`make bench`: figures as ratios against a baseline measured in the same run.

Mail delivery:

(a) raw: pre-built messages submitted with smtplib over one connection to a local aiosmtpd
    sink — the physical limit of this machine;
(b) end-to-end: nurture's outbox (claim → render → build → send → record) for personalised
    messages of one template, one worker process, on SQLite and (when reachable) PostgreSQL;
and the cost of one premailer inlining against one cached per-recipient render.
Contacts (bench/contacts.py): CSV import against a plain executemany insert, on both backends,
and a segment count over 1,000,000 contacts on PostgreSQL.
Every figure also goes to bench/results.json as {"name": value}.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nurture.clock import SystemClock  # noqa: E402
from nurture.config import load_settings, parse_smtp_url  # noqa: E402
from nurture.consent.ledger import Origin, record  # noqa: E402
from nurture.consent.models import Action, Topic, TopicKind  # noqa: E402
from nurture.contacts.importer import import_contacts  # noqa: E402
from nurture.contacts.models import Contact  # noqa: E402
from nurture.db import Database  # noqa: E402
from nurture.mail import outbox  # noqa: E402
from nurture.mail.delivery import Deliverer  # noqa: E402
from nurture.mail.message import MessageParts, MessageSkeleton  # noqa: E402
from nurture.mail.models import Purpose  # noqa: E402
from nurture.mail.render import TemplateSource, compile_template, sample_context  # noqa: E402
from nurture.mail.templates import TemplateDraft, create_template, latest_version  # noqa: E402
from nurture.mail.transports import SmtpTransport  # noqa: E402
from nurture.migrate import upgrade  # noqa: E402
from nurture.ops.heartbeat import register_worker  # noqa: E402
from nurture.state import build_state  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "2000"))
PG_URL = os.environ.get("NURTURE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BODY = "".join(
    f"<tr><td class='cell'>Produkt {i}</td><td class='price'>{i * 3},99 €</td></tr>"
    for i in range(40)
)
DRAFT = TemplateDraft(
    subject="{{ contact.first_name }}, wir vermissen Sie",
    html=(
        "<h1>{{ salutation }},</h1><p>lange nicht gesehen! Ihr persönlicher Code für "
        "<strong>{{ contact.company }}</strong></p><table class='products'>" + BODY + "</table>"
        '<p><a href="https://shop.example/comeback?c={{ contact.company }}">Zum Shop</a></p>'
    ),
    css=".cell{padding:4px 8px;color:#333}.price{font-weight:bold;text-align:right}"
    "h1{font-size:20px;color:#0b5}",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sink() -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/sink.py"), str(port)], stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    return sink, port


def _context(i: int) -> dict:
    return {
        "contact": {"first_name": f"Anna{i}", "last_name": "Müller", "company": f"WB{i:05d}"},
        "salutation": "Sehr geehrte Frau Dr. Müller",
        "lang": "de",
    }


def bench_raw(port: int) -> float:
    """Pre-built personalised messages over one smtplib connection."""
    compiled = compile_template(DRAFT.source())
    skeleton = MessageSkeleton(
        from_addr="news@nurture.example", from_name="nurture", list_id="<marketing.nurture.example>"
    )
    now = datetime.now(UTC)
    messages = []
    for i in range(N):
        ctx = sample_context() | _context(i)
        mail = compiled.render(ctx)
        messages.append(
            skeleton.build(
                MessageParts(
                    to_addr=f"k{i}@kunde.example",
                    to_name=f"Anna {i}",
                    subject=mail.subject,
                    html=mail.html,
                    text=mail.text,
                    message_id=f"<{uuid.uuid4().hex}@nurture.example>",
                    date=now,
                )
            )
        )
    smtp = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for i, raw in enumerate(messages):
        smtp.sendmail("bounces@nurture.example", [f"k{i}@kunde.example"], raw)
    elapsed = time.perf_counter() - started
    smtp.quit()
    return N / elapsed


def bench_e2e(port: int, database_url: str) -> float:
    """The outbox pipeline for N queued messages, one worker process."""
    with tempfile.TemporaryDirectory() as instance:
        settings = load_settings(
            {
                "NURTURE_INSTANCE_PATH": instance,
                "NURTURE_DATABASE_URL": database_url,
                "NURTURE_MAIL_FROM": "news@nurture.example",
                "NURTURE_MAIL_TRANSPORT": "smtp",
                "NURTURE_SMTP_URL": f"smtp://127.0.0.1:{port}",
                "NURTURE_OUTBOX_BATCH": "500",
            }
        )
        upgrade(settings.database_url)
        state = build_state(settings, clock=SystemClock())
        with state.db.session_scope() as session:
            template = create_template(
                session,
                name="Bench",
                draft=DRAFT,
                now=state.clock.now(),
                imprint=settings.sender_imprint,
            )
            version = latest_version(session, template.id)
            assert version is not None
            contact_ids = _subscribers(session, state.clock.now())
            for i in range(N):
                outbox.enqueue(
                    session,
                    key=f"bench:{i}",
                    purpose=Purpose.MARKETING,
                    to_addr=f"k{i}@kunde.example",
                    to_name=f"Anna {i}",
                    context=_context(i),
                    template_version_id=version.id,
                    contact_id=contact_ids[i],
                    topic="news",
                    now=state.clock.now(),
                )
            worker_id = register_worker(session, mode="bench", now=state.clock.now()).id
        deliverer = Deliverer(
            state,
            worker_id=worker_id,
            transport=SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}")),
        )
        started = time.perf_counter()
        report = deliverer.run(budget_seconds=600)
        elapsed = time.perf_counter() - started
        assert report.sent == N, report
        state.close()
        return N / elapsed


def _subscribers(session, now: datetime) -> list[int]:  # type: ignore[no-untyped-def]
    """N contacts with a confirmed consent for "news": the send gate lets their mail through."""
    rows = "".join(f"k{i}@kunde.example;Anna {i}\r\n" for i in range(N))
    import_contacts(
        session, ("E-Mail;Nachname\r\n" + rows).encode(), mapping=None, now=now, source="bench"
    )
    topic = Topic(slug="news", name="News", kind=TopicKind.MARKETING, created_at=now)
    session.add(topic)
    session.flush()
    ids = [
        session.scalar(select(Contact.id).where(Contact.email == f"k{i}@kunde.example"))
        for i in range(N)
    ]
    origin = Origin(source="bench")
    for contact_id in ids:
        record(
            session,
            contact_id=contact_id,
            topic=topic,
            action=Action.CONFIRMED,
            origin=origin,
            now=now,
        )
    return ids


def bench_render() -> tuple[float, float]:
    """Milliseconds for one premailer inlining vs one cached render."""
    source = TemplateSource(subject=DRAFT.subject, html=DRAFT.html, css=DRAFT.css)
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        compiled = compile_template(source)
    inline_ms = (time.perf_counter() - started) / rounds * 1000
    ctx = sample_context() | _context(1)
    renders = 2000
    started = time.perf_counter()
    for _ in range(renders):
        compiled.render(ctx)
    render_ms = (time.perf_counter() - started) / renders * 1000
    return inline_ms, render_ms


def _postgres_database() -> tuple[str, callable] | None:  # type: ignore[valid-type]
    server = make_url("postgresql+psycopg://" + PG_URL.split("://", 1)[1])
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return None
    name = f"nurture_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def bench_contacts() -> dict[str, float]:
    """Import rates against plain inserts on both backends, and a segment count on PostgreSQL."""
    from bench import contacts

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def sqlite_url(name: str) -> tuple[str, callable]:  # type: ignore[valid-type]
            path = Path(tmp) / f"{name}.sqlite3"
            return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)

        rates = contacts.bench_import(sqlite_url)
    figures["import_rows_per_s_sqlite"] = rates["import_rows_per_s"]
    figures["plain_insert_rows_per_s_sqlite"] = rates["plain_rows_per_s"]
    figures["import_ratio_sqlite"] = rates["import_rows_per_s"] / rates["plain_rows_per_s"]

    def pg_url(_name: str) -> tuple[str, callable]:  # type: ignore[valid-type]
        made = _postgres_database()
        if made is None:
            raise RuntimeError("PostgreSQL is unreachable")
        return made

    if _postgres_database_reachable():
        rates = contacts.bench_import(pg_url)
        figures["import_rows_per_s_pg"] = rates["import_rows_per_s"]
        figures["plain_insert_rows_per_s_pg"] = rates["plain_rows_per_s"]
        figures["import_ratio_pg"] = rates["import_rows_per_s"] / rates["plain_rows_per_s"]
        url, drop = pg_url("segments")
        try:
            upgrade(url)
            db = Database(url)
            contacts.fill_segment_data(db, contacts.SEGMENT_CONTACTS)
            seconds, count = contacts.time_count(db, contacts.WIN_BACK_SEGMENT)
            figures["segment_count_1m_s_pg"] = seconds
            figures["segment_count_1m_matches"] = count
            seconds, count = contacts.time_count(db, contacts.SIMPLE_SEGMENT)
            figures["segment_count_1m_simple_s_pg"] = seconds
            db.dispose()
        finally:
            drop()
    return figures


def _postgres_database_reachable() -> bool:
    made = _postgres_database()
    if made is None:
        return False
    made[1]()
    return True


def main() -> None:
    results: dict[str, float] = {}
    sink, port = _start_sink()
    try:
        bench_raw(port)  # warm-up: imports, sockets, the sink's first connection
        results["send_raw_per_s"] = bench_raw(port)
        with tempfile.TemporaryDirectory() as tmp:
            results["send_e2e_per_s"] = bench_e2e(port, f"sqlite:///{tmp}/bench.sqlite3")
        results["send_ratio"] = results["send_e2e_per_s"] / results["send_raw_per_s"]
        pg = _postgres_database()
        if pg is not None:
            url, drop = pg
            try:
                results["send_e2e_per_s_pg"] = bench_e2e(port, url)
                results["send_ratio_pg"] = results["send_e2e_per_s_pg"] / results["send_raw_per_s"]
            finally:
                drop()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    results |= bench_contacts()
    inline_ms, render_ms = bench_render()
    results["premailer_inline_ms"] = inline_ms
    results["cached_render_ms"] = render_ms
    results["inline_vs_render"] = inline_ms / render_ms

    width = max(len(k) for k in results)
    print(f"\nnurture benchmark ({N} messages, one worker process, sink on loopback;")
    print("  contact import of a 100,000-row CSV; segment count over 1,000,000 contacts)\n")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:>12.3f}")
    for name, goal, wanted in (
        ("send_ratio", 0.6, "min"),
        ("import_ratio_sqlite", 0.25, "min"),
        ("import_ratio_pg", 0.25, "min"),
        ("segment_count_1m_s_pg", 1.0, "max"),
    ):
        if name in results:
            met = results[name] >= goal if wanted == "min" else results[name] < goal
            sign = ">=" if wanted == "min" else "<"
            print(f"  target {name} {sign} {goal}: {'met' if met else 'NOT met'}")
    out = ROOT / "bench/results.json"
    existing = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(existing | results, indent=2, sort_keys=True) + "\n")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

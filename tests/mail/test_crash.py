"""Three worker processes, one killed with SIGKILL mid-run: every message at most once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from nurture.mail import outbox
from nurture.mail.models import Message, MessageState, Purpose
from nurture.mail.templates import TemplateDraft, create_template, latest_version
from nurture.ops.models import WorkerHeartbeat
from tests.conftest import SECRET
from tests.factories import make_subscriber
from tests.mail.conftest import SinkHandler, free_port

pytestmark = pytest.mark.slow
MESSAGES = 2000
CONNECTIONS = 2
MESSAGE_ID = re.compile(rb"^Message-ID: <([0-9a-f]{32})@", re.MULTILINE | re.IGNORECASE)


class SlowSink(SinkHandler):
    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        # A little latency per message, like a real relay, so the kill lands mid-run.
        await asyncio.sleep(0.004)
        return await super().handle_DATA(server, session, envelope)


def test_sigkilled_worker_never_causes_a_duplicate(app, backend, database_url, tmp_path, clock):  # type: ignore[no-untyped-def]
    if backend != "postgresql":
        pytest.skip("several workers need PostgreSQL")
    state = app.extensions["nurture"]
    with state.db.session_scope() as session:
        template = create_template(
            session,
            name="Comeback",
            now=clock.now(),
            imprint=state.settings.sender_imprint,
            draft=TemplateDraft(
                subject="Wir vermissen Sie, {{ contact.first_name }}",
                html="<p>{{ salutation }},</p><p>lange nicht gesehen.</p>",
            ),
        )
        version = latest_version(session, template.id)
        assert version is not None
        for i in range(MESSAGES):
            outbox.enqueue(
                session,
                key=f"crash:{i}",
                purpose=Purpose.MARKETING,
                to_addr=f"kunde{i}@kunde.example",
                to_name=f"Kunde {i}",
                context={"contact": {"first_name": f"K{i}"}, "salutation": "Hallo"},
                template_version_id=version.id,
                contact_id=make_subscriber(session, clock, email=f"kunde{i}@kunde.example").id,
                topic="news",
                now=clock.now(),
            )

    handler = SlowSink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    env = os.environ | {
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_INSTANCE_PATH": str(tmp_path),
        "NURTURE_MAIL_TRANSPORT": "smtp",
        "NURTURE_SMTP_URL": f"smtp://127.0.0.1:{port}?timeout=10",
        "NURTURE_MAIL_FROM": "news@nurture.example",
        "NURTURE_SMTP_CONNECTIONS": str(CONNECTIONS),
        "NURTURE_OUTBOX_INTERVAL_SECONDS": "1",
        "NURTURE_OUTBOX_BATCH": "40",
        "NURTURE_OUTBOX_LEASE_SECONDS": "3",
        "NURTURE_HEARTBEAT_SECONDS": "1",
        "NURTURE_LOG_LEVEL": "WARNING",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "nurture", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    victim = workers[0]
    try:
        deadline = time.monotonic() + 120
        while len(handler.received) < MESSAGES // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(handler.received) >= MESSAGES // 3, "workers did not get going"
        with state.db.session_scope() as session:
            victim_id = session.scalar(
                select(WorkerHeartbeat.id).where(WorkerHeartbeat.pid == victim.pid)
            )
        # Kill it while it has a message on the wire: the hardest moment for exactly-once.
        kill_deadline = time.monotonic() + 10
        while time.monotonic() < kill_deadline:
            with state.db.session_scope() as session:
                in_flight = session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.claimed_by == victim_id, Message.state == MessageState.SENDING)
                )
            if in_flight:
                break
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)

        open_states = (MessageState.QUEUED, MessageState.SENDING)
        while time.monotonic() < deadline:
            with state.db.session_scope() as session:
                left = session.scalar(
                    select(func.count()).select_from(Message).where(Message.state.in_(open_states))
                )
            if left == 0:
                break
            time.sleep(0.5)
    finally:
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        errors = [worker.communicate(timeout=30)[1] for worker in workers[1:]]
        controller.stop()
    assert [w.returncode for w in workers[1:]] == [0, 0], errors

    delivered = Counter(
        match.group(1).decode()
        for received in handler.received
        if (match := MESSAGE_ID.search(received.raw))
    )
    assert len(delivered) == sum(1 for _ in handler.received), "every mail carries our Message-ID"
    assert max(delivered.values()) == 1, "a message reached the sink twice"

    with state.db.session_scope() as session:
        rows = session.execute(select(Message.token, Message.state)).all()
    by_state = Counter(row.state for row in rows)
    print(f"crash test: delivered {len(delivered)}, states {dict(by_state)}")
    with state.db.session_scope() as session:
        by_victim = session.scalar(
            select(func.count()).select_from(Message).where(Message.claimed_by == victim_id)
        )
    assert by_victim, "the killed worker had taken part"
    assert len(rows) == MESSAGES
    assert by_state[MessageState.QUEUED] == by_state[MessageState.SENDING] == 0
    assert set(by_state) <= {MessageState.SENT, MessageState.FAILED, MessageState.UNCERTAIN}
    # Only what was on the wire when the worker died may be uncertain: one per connection.
    assert by_state[MessageState.UNCERTAIN] <= CONNECTIONS
    sent = {row.token for row in rows if row.state == MessageState.SENT}
    assert sent <= set(delivered), "a row marked sent never reached the sink"
    assert len(sent) >= MESSAGES - CONNECTIONS

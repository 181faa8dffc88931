import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import LoginAttempt
from nurture.clock import FrozenClock
from nurture.ops.models import WorkerHeartbeat
from nurture.worker import Worker, WorkerLockError
from tests.conftest import SECRET


def test_worker_registers_beats_and_marks_itself_stopped(app: Flask, clock: FrozenClock) -> None:
    state = app.extensions["nurture"]
    worker = Worker(state, mode="embedded")
    worker.start()
    try:
        assert {job.id for job in worker.scheduler.get_jobs()} == {
            "heartbeat",
            "outbox",
            "imports",
            "purge_import_jobs",
            "purge_login_attempts",
            "expire_optin_requests",
        }
        for job in worker.scheduler.get_jobs():
            assert job.max_instances == 1 and job.coalesce is True
            assert job.misfire_grace_time == state.settings.misfire_grace_seconds
    finally:
        worker.shutdown()
    with state.db.session_scope() as session:
        row = session.get(WorkerHeartbeat, worker.worker_id)
        assert row is not None
        assert row.mode == "embedded" and row.pid == os.getpid()
        assert row.stopped_at == clock.now()


def test_job_run_calls_the_service_and_counts(app: Flask, session: Session, clock) -> None:
    state = app.extensions["nurture"]
    session.add(
        LoginAttempt(
            email="a@b.c", ip="1.2.3.4", succeeded=False, at=clock.now() - timedelta(days=31)
        )
    )
    session.add(LoginAttempt(email="a@b.c", ip="1.2.3.4", succeeded=False, at=clock.now()))
    session.commit()
    worker = Worker(state, mode="worker")
    worker.start()
    try:
        worker.run_job_now("purge_login_attempts")
    finally:
        worker.shutdown()
    session.expire_all()
    assert len(session.scalars(select(LoginAttempt)).all()) == 1
    row = session.get(WorkerHeartbeat, worker.worker_id)
    assert row is not None and row.jobs_run == 1 and row.last_job == "purge_login_attempts"
    metrics = state.metrics.render().decode()
    assert 'nurture_job_runs_total{job="purge_login_attempts",outcome="ok"} 1.0' in metrics


def test_sqlite_allows_one_worker(app: Flask, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the single-worker lock is SQLite's")
    state = app.extensions["nurture"]
    first = Worker(state, mode="worker")
    first.start()
    try:
        with pytest.raises(WorkerLockError, match="SQLite supports one worker"):
            Worker(state, mode="worker").start()
    finally:
        first.shutdown()
    # Once the first is gone, a new one may start.
    again = Worker(state, mode="worker")
    again.start()
    again.shutdown()


@pytest.mark.slow
def test_two_worker_processes_beat_on_postgres_and_stop_on_sigterm(
    app: Flask, backend: str, database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    if backend != "postgresql":
        pytest.skip("several workers need PostgreSQL")
    env = os.environ | {
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_INSTANCE_PATH": str(tmp_path),
        "NURTURE_HEARTBEAT_SECONDS": "1",
        "NURTURE_LOG_FORMAT": "json",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nurture", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    db = app.extensions["nurture"].db
    try:
        deadline = time.monotonic() + 30
        rows: list[WorkerHeartbeat] = []
        while time.monotonic() < deadline:
            with db.session_scope() as session:
                rows = list(session.scalars(select(WorkerHeartbeat)))
                beating = [r for r in rows if r.last_beat_at > r.started_at]
            if len(beating) == 2:
                break
            time.sleep(0.3)
        assert {r.pid for r in rows} == {p.pid for p in procs}
        assert len(beating) == 2, "both workers should have beaten at least once"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with db.session_scope() as session:
        assert all(r.stopped_at is not None for r in session.scalars(select(WorkerHeartbeat)))

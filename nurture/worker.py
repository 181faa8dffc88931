"""APScheduler wiring, and nothing else: each job body calls one service function.

All coordination between workers lives in the database (heartbeats now; claims on the outbox
and enrolments later), so N workers against one PostgreSQL are safe. SQLite runs one worker,
enforced with a file lock beside the database file.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from nurture.auth.login import purge_login_attempts
from nurture.consent.optin import expire_requests
from nurture.consent.signup_forms import purge_attempts
from nurture.contacts.import_jobs import purge_old_jobs, run_pending
from nurture.mail.delivery import Deliverer
from nurture.ops.heartbeat import beat, mark_stopped, record_job_run, register_worker
from nurture.state import Nurture

log = logging.getLogger(__name__)

IMPORTS_INTERVAL_SECONDS = 3
IMPORTS_BUDGET = 60.0


class WorkerLockError(RuntimeError):
    """Another worker already runs against this SQLite database."""


@dataclass(frozen=True)
class JobContext:
    session: Session
    now: datetime
    state: Nurture
    worker: Worker


@dataclass(frozen=True)
class JobSpec:
    id: str
    seconds: int
    run: Callable[[JobContext], object]
    # The heartbeat is bookkeeping, not work: it does not count as a job run.
    counts: bool = True


def _deliver(ctx: JobContext) -> object:
    # The outbox owns its transactions (claim, then one commit per message state change), so
    # it gets no session from here.
    return ctx.worker.deliverer.run()


def _imports(ctx: JobContext) -> object:
    # Imports commit per batch on sessions of their own, like the outbox; the budget bounds
    # how many jobs one run starts, so the scheduler's other jobs get their turn.
    return run_pending(
        ctx.state.db,
        now_fn=ctx.state.clock.now,
        budget_seconds=IMPORTS_BUDGET,
        suppression_secret=ctx.state.settings.suppression_secret,
    )


def _expire_optin(ctx: JobContext) -> object:
    purge_attempts(ctx.session, now=ctx.now)
    return expire_requests(ctx.session, now=ctx.now)


def job_specs(state: Nurture) -> list[JobSpec]:
    """The jobs every worker runs. Later domains append theirs (tick, purges)."""
    return [
        JobSpec("outbox", state.settings.outbox_interval_seconds, _deliver),
        JobSpec("imports", IMPORTS_INTERVAL_SECONDS, _imports),
        JobSpec("purge_import_jobs", 3600, lambda ctx: purge_old_jobs(ctx.session, now=ctx.now)),
        JobSpec(
            "purge_login_attempts",
            3600,
            lambda ctx: purge_login_attempts(ctx.session, now=ctx.now),
        ),
        # Unconfirmed sign-ups die after their link (ledger "expired"); rate-limit hits after a day.
        JobSpec("expire_optin_requests", 3600, _expire_optin),
    ]


class Worker:
    def __init__(self, state: Nurture, *, mode: str) -> None:
        self.state = state
        self.mode = mode
        self.worker_id: str | None = None
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": state.settings.misfire_grace_seconds,
            },
        )
        self._lock_file: IO[str] | None = None
        self._deliverer: Deliverer | None = None

    @property
    def deliverer(self) -> Deliverer:
        """Built on first use and kept: its template and skeleton caches live with the worker."""
        if self._deliverer is None:
            assert self.worker_id is not None, "start the worker first"
            self._deliverer = Deliverer(self.state, worker_id=self.worker_id)
        return self._deliverer

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._acquire_sqlite_lock()
        with self.state.db.session_scope() as session:
            self.worker_id = register_worker(session, mode=self.mode, now=self.state.clock.now()).id
        seconds = self.state.settings.heartbeat_seconds
        self.scheduler.add_job(
            self._run, "interval", seconds=seconds, id="heartbeat", args=[self._beat_spec()]
        )
        for spec in job_specs(self.state):
            self.scheduler.add_job(
                self._run, "interval", seconds=spec.seconds, id=spec.id, args=[spec]
            )
        self.scheduler.start()
        log.info("worker %s started in %s mode", self.worker_id, self.mode)

    def shutdown(self) -> None:
        """Let running jobs finish, then record that this worker stopped."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.worker_id:
            with self.state.db.session_scope() as session:
                mark_stopped(session, self.worker_id, now=self.state.clock.now())
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        log.info("worker %s stopped", self.worker_id)

    def run_forever(self, stop: threading.Event) -> None:
        """Foreground mode for ``nurture worker``: block until ``stop`` is set (SIGTERM)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.shutdown()

    # -- jobs --------------------------------------------------------------------------------
    def _beat_spec(self) -> JobSpec:
        def run(ctx: JobContext) -> None:
            assert self.worker_id is not None
            beat(ctx.session, self.worker_id, now=ctx.now)

        return JobSpec("heartbeat", self.state.settings.heartbeat_seconds, run, counts=False)

    def _run(self, spec: JobSpec) -> None:
        metrics = self.state.metrics
        started = time.perf_counter()
        outcome = "ok"
        try:
            with self.state.db.session_scope() as session:
                now = self.state.clock.now()
                spec.run(JobContext(session, now, self.state, self))
                if spec.counts and self.worker_id:
                    record_job_run(session, self.worker_id, spec.id, now=now)
        except Exception:
            outcome = "error"
            log.exception("job %s failed", spec.id)
        finally:
            metrics.job_runs.labels(spec.id, outcome).inc()
            metrics.job_seconds.labels(spec.id).observe(time.perf_counter() - started)

    def run_job_now(self, job_id: str) -> None:
        """Run one job synchronously (CLI and tests)."""
        specs = {s.id: s for s in job_specs(self.state)}
        self._run(specs[job_id])

    # -- SQLite ------------------------------------------------------------------------------
    def _acquire_sqlite_lock(self) -> None:
        url = make_url(self.state.settings.database_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            return
        path = Path(url.database).with_suffix(".worker.lock")
        handle = path.open("w")
        try:
            # The kernel drops the lock when the process dies, so a crash never leaves it stuck.
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkerLockError(
                f"another nurture worker already runs against {url.database}; SQLite supports "
                "one worker (use PostgreSQL to run several)"
            ) from None
        self._lock_file = handle

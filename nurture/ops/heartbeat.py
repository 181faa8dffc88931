"""Worker heartbeats: each worker process proves it is alive by updating its row."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nurture.ops.models import WorkerHeartbeat


def register_worker(session: Session, *, mode: str, now: datetime) -> WorkerHeartbeat:
    """Create this process's heartbeat row."""
    row = WorkerHeartbeat(
        id=str(uuid.uuid4()),
        host=socket.gethostname()[:255],
        pid=os.getpid(),
        mode=mode,
        started_at=now,
        last_beat_at=now,
        jobs_run=0,
    )
    session.add(row)
    session.flush()
    return row


def beat(session: Session, worker_id: str, *, now: datetime) -> None:
    session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.id == worker_id)
        .values(last_beat_at=now, stopped_at=None)
    )


def record_job_run(session: Session, worker_id: str, job: str, *, now: datetime) -> None:
    """Count a finished job; a job run is also a sign of life."""
    session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.id == worker_id)
        .values(
            jobs_run=WorkerHeartbeat.jobs_run + 1,
            last_job=job,
            last_job_at=now,
            last_beat_at=now,
        )
    )


def mark_stopped(session: Session, worker_id: str, *, now: datetime) -> None:
    session.execute(
        update(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id).values(stopped_at=now)
    )


@dataclass(frozen=True)
class WorkerStatus:
    row: WorkerHeartbeat
    alive: bool
    age: timedelta


def worker_statuses(
    session: Session, *, now: datetime, stale_after: timedelta, recent: timedelta | None = None
) -> list[WorkerStatus]:
    """Workers seen within ``recent`` (default: a day), newest beat first."""
    recent = recent or timedelta(days=1)
    rows = session.scalars(
        select(WorkerHeartbeat)
        .where(WorkerHeartbeat.last_beat_at >= now - recent)
        .order_by(WorkerHeartbeat.last_beat_at.desc())
    )
    statuses = []
    for row in rows:
        age = now - row.last_beat_at
        alive = row.stopped_at is None and age <= stale_after
        statuses.append(WorkerStatus(row=row, alive=alive, age=age))
    return statuses


def latest_live_beat(session: Session, *, now: datetime, stale_after: timedelta) -> datetime | None:
    """The newest beat of a running worker if it is fresh, else None."""
    newest = session.scalar(
        select(WorkerHeartbeat.last_beat_at)
        .where(WorkerHeartbeat.stopped_at.is_(None))
        .order_by(WorkerHeartbeat.last_beat_at.desc())
        .limit(1)
    )
    if newest is None or now - newest > stale_after:
        return None
    return newest

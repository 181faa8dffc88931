"""What every adapter needs: settings, the database, the clock and the metrics registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from nurture.clock import Clock, SystemClock
from nurture.config import Settings
from nurture.db import Database
from nurture.mail.models import MessageState
from nurture.mail.outbox import counts_by_state
from nurture.ops.metrics import DatabaseGauges, Metrics
from nurture.ops.models import WorkerHeartbeat


@dataclass
class Nurture:
    settings: Settings
    db: Database
    clock: Clock
    metrics: Metrics

    def close(self) -> None:
        self.db.dispose()


def build_state(settings: Settings, *, clock: Clock | None = None) -> Nurture:
    state = Nurture(
        settings=settings,
        db=Database(settings.database_url),
        clock=clock or SystemClock(),
        metrics=Metrics(),
    )
    state.metrics.add_collector(DatabaseGauges(lambda: _database_gauges(state)))
    return state


def _database_gauges(state: Nurture) -> dict[str, Any]:
    now = state.clock.now()
    fresh = now - timedelta(seconds=state.settings.worker_stale_seconds)
    with state.db.session_scope() as session:
        alive = session.scalar(
            select(func.count())
            .select_from(WorkerHeartbeat)
            .where(WorkerHeartbeat.stopped_at.is_(None), WorkerHeartbeat.last_beat_at >= fresh)
        )
        by_state = counts_by_state(session)
    outbox = {s.value: float(by_state.get(s.value, 0)) for s in MessageState}
    return {"workers_alive": float(alive or 0), "outbox_messages": {"state": outbox}}

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from nurture.db import Base, UtcDateTime


class WorkerHeartbeat(Base):
    """One row per worker process (embedded or standalone), beating while it runs."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    mode: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_beat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    jobs_run: Mapped[int] = mapped_column(default=0)
    last_job: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_job_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    __table_args__ = (Index("ix_worker_heartbeats_last_beat_at", "last_beat_at"),)

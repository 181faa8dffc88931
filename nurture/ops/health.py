"""Readiness: can this instance do its work right now?"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nurture.migrate import current_revision, head_revision
from nurture.ops.heartbeat import latest_live_beat


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


def check_readiness(session: Session, *, now: datetime, stale_after: timedelta) -> Readiness:
    """Database reachable, schema at the newest migration, a worker beat recently."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        return Readiness(False, checks)

    head = head_revision()
    current = current_revision(session.get_bind())  # type: ignore[arg-type]
    checks["migrations"] = {"ok": current == head, "current": current, "head": head}
    if current != head:
        return Readiness(False, checks)

    newest = latest_live_beat(session, now=now, stale_after=stale_after)
    checks["worker"] = {
        "ok": newest is not None,
        "last_beat_at": newest.isoformat() if newest else None,
        "stale_after_seconds": int(stale_after.total_seconds()),
    }
    return Readiness(all(c["ok"] for c in checks.values()), checks)

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from nurture.auth.access import login_required
from nurture.ops.heartbeat import worker_statuses
from nurture.web.context import db_session, now, settings

bp = Blueprint("web", __name__)


@bp.get("/")
@login_required
def dashboard() -> ResponseReturnValue:
    stale = timedelta(seconds=settings().worker_stale_seconds)
    workers = worker_statuses(db_session(), now=now(), stale_after=stale)
    alive = [w for w in workers if w.alive]
    return render_template(
        "web/dashboard.html", workers=workers, alive=alive, stale_seconds=stale.total_seconds()
    )

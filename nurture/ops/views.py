"""/healthz, /readyz and /metrics: for load balancers and Prometheus, no login."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from nurture.ops.health import check_readiness
from nurture.web.context import db_session, now, settings, state

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    stale = timedelta(seconds=settings().worker_stale_seconds)
    result = check_readiness(db_session(), now=now(), stale_after=stale)
    body = {"status": "ready" if result.ready else "not_ready", "checks": result.checks}
    return jsonify(body), 200 if result.ready else 503


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    return Response(state().metrics.render(), mimetype="text/plain; version=0.0.4")

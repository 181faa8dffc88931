from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from nurture import create_app
from nurture.clock import FrozenClock
from nurture.mail.models import Purpose
from nurture.mail.outbox import enqueue
from nurture.ops.heartbeat import beat, register_worker
from tests.conftest import make_settings


def test_healthz_says_the_process_is_up(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_not_ready_without_a_worker(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body is not None
    assert body["status"] == "not_ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["worker"]["ok"] is False


def test_readyz_follows_the_worker_heartbeat(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    worker = register_worker(session, mode="worker", now=clock.now())
    session.commit()
    assert client.get("/readyz").status_code == 200

    # 61 s without a beat is stale (the limit is 60 s).
    clock.advance(seconds=61)
    stale = client.get("/readyz")
    assert stale.status_code == 503
    assert stale.json["checks"]["worker"]["ok"] is False  # type: ignore[index]

    beat(session, worker.id, now=clock.now())
    session.commit()
    assert client.get("/readyz").status_code == 200


def test_readyz_is_not_ready_before_migrations(tmp_path, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    app = create_app(make_settings(empty, tmp_path / "i"), clock=clock)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    migrations = response.json["checks"]["migrations"]  # type: ignore[index]
    assert migrations["ok"] is False and migrations["current"] is None
    app.extensions["nurture"].close()


def test_metrics_expose_requests_and_live_workers(
    app: Flask, client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    register_worker(session, mode="worker", now=clock.now())
    register_worker(session, mode="worker", now=clock.now() - timedelta(hours=1))
    enqueue(
        session,
        key="k",
        purpose=Purpose.TEST,
        to_addr="a@kunde.example",
        context={},
        builtin="optin_confirmation",
        now=clock.now(),
    )
    session.commit()
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'nurture_http_requests_total{endpoint="ops.healthz",method="GET",status="200"} 1.0' in text
    )
    # Only the fresh one of the two workers counts as alive.
    assert "nurture_workers_alive 1.0" in text
    assert 'nurture_outbox_messages{state="queued"} 1.0' in text
    assert 'nurture_outbox_messages{state="uncertain"} 0.0' in text

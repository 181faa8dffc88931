import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.orm import Session

from nurture.db import claim
from nurture.ops.models import WorkerHeartbeat


def test_times_come_back_timezone_aware_in_utc(session: Session) -> None:
    # 10:00 in UTC+2 is 08:00 UTC on both backends.
    berlin_summer = timezone(timedelta(hours=2))
    moment = datetime(2026, 6, 1, 10, 0, tzinfo=berlin_summer)
    session.add(
        WorkerHeartbeat(
            id="w",
            host="h",
            pid=1,
            mode="worker",
            started_at=moment,
            last_beat_at=moment,
            jobs_run=0,
        )
    )
    session.commit()
    session.expire_all()
    row = session.get(WorkerHeartbeat, "w")
    assert row is not None
    assert row.started_at == datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    assert row.started_at.tzinfo == UTC


def test_naive_datetimes_are_refused(session: Session) -> None:
    session.add(
        WorkerHeartbeat(
            id="w",
            host="h",
            pid=1,
            mode="worker",
            started_at=datetime(2026, 1, 1),
            last_beat_at=datetime(2026, 1, 1),
            jobs_run=0,
        )
    )
    with pytest.raises(Exception, match="naive datetime"):
        session.flush()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(session: Session, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


@pytest.fixture
def jobs_table(app):  # type: ignore[no-untyped-def]
    """A scratch table for the claim helper (the outbox will be its first real user)."""
    engine = app.extensions["nurture"].db.engine
    metadata = MetaData()
    table = Table(
        "claim_test_jobs",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("state", String(16), nullable=False),
        Column("owner", String(16)),
    )
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": i, "state": "queued"} for i in range(1, 41)])
    yield table
    metadata.drop_all(engine)


def _claim(session: Session, table: Table, owner: str, limit: int) -> list[int]:
    return claim(
        session,
        table,
        where=[table.c.state == "queued"],
        values={"state": "claimed", "owner": owner},
        limit=limit,
        order_by=[table.c.id],
    )


def test_claim_takes_a_batch_once(app, jobs_table) -> None:  # type: ignore[no-untyped-def]
    db = app.extensions["nurture"].db
    with db.session_scope() as first:
        taken = _claim(first, jobs_table, "a", 15)
    with db.session_scope() as second:
        again = _claim(second, jobs_table, "b", 100)
    assert taken == list(range(1, 16))
    assert again == list(range(16, 41))
    with db.session_scope() as third:
        assert _claim(third, jobs_table, "c", 10) == []


def test_concurrent_claims_on_postgres_skip_locked_rows(app, jobs_table, backend) -> None:  # type: ignore[no-untyped-def]
    if backend != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    db = app.extensions["nurture"].db
    holder = db.session()
    held = _claim(holder, jobs_table, "a", 10)  # locks rows 1-10, not yet committed
    result: list[int] = []

    def other() -> None:
        with db.session_scope() as session:
            result.extend(_claim(session, jobs_table, "b", 10))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the second claim waited for the first one's locks"
    holder.commit()
    holder.close()
    assert held == list(range(1, 11))
    assert result == list(range(11, 21))
    with db.session_scope() as session:
        owners = dict(session.execute(select(jobs_table.c.id, jobs_table.c.owner)).all())
    assert {owners[i] for i in range(1, 11)} == {"a"}
    assert {owners[i] for i in range(11, 21)} == {"b"}

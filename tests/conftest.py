"""Fixtures: every database test runs on SQLite and on PostgreSQL, schema built by migrations."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from nurture import create_app
from nurture.clock import FrozenClock
from nurture.config import Settings, load_settings
from nurture.db import Base
from nurture.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("NURTURE_TEST_REQUIRE_POSTGRES") == "1"
SECRET = "test-secret-key-that-is-long-enough-0123456789"


def _psycopg(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A migrated database per backend and test session."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "nurture.sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        return

    server = make_url(_psycopg(POSTGRES_URL))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at {server.render_as_string()} is unreachable: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


def make_settings(database_url: str, instance: Path, **overrides: object) -> Settings:
    env = {
        "NURTURE_INSTANCE_PATH": str(instance),
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_BASE_URL": "https://nurture.test",
        "NURTURE_MAIL_FROM": "news@nurture.example",
    }
    return load_settings(env).with_overrides(testing=True, **overrides)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "instance")


def reset_database(engine: Engine) -> None:
    """Empty every table (the schema stays): isolation that also covers other processes."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{t}"' for t in tables)
            connection.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f'DELETE FROM "{table}"'))


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> Iterator[Flask]:
    application = create_app(settings, clock=clock)
    state = application.extensions["nurture"]
    try:
        yield application
    finally:
        reset_database(state.db.engine)
        state.close()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    db_session = app.extensions["nurture"].db.session()
    try:
        yield db_session
    finally:
        db_session.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, app) -> CliRunner:  # type: ignore[no-untyped-def]
    """The `nurture` CLI against the test database (`app` empties it afterwards)."""
    monkeypatch.setenv("NURTURE_DATABASE_URL", database_url)
    monkeypatch.setenv("NURTURE_SECRET_KEY", SECRET)
    monkeypatch.setenv("NURTURE_INSTANCE_PATH", str(tmp_path))
    return CliRunner()


def free_port() -> int:
    """A free TCP port on loopback, for servers the tests start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def login(client: FlaskClient, email: str, password: str):
    page = client.get("/login")
    token = csrf_token(page.get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say plainly whether the PostgreSQL leg ran, so a skipped leg cannot hide."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "postgresql" in getattr(report, "nodeid", ""):
                counts[outcome] = counts.get(outcome, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests"
    terminalreporter.write_line(f"PostgreSQL leg ({POSTGRES_URL}): {parts}")

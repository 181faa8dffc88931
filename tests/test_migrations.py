import os
import subprocess
import sys
import uuid
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from nurture.db import Base, make_engine
from nurture.migrate import head_revision
from nurture.models import Base as AllModels  # noqa: F401  (imports every model)
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, _psycopg


def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    # The schema was built by the migrations; the models must describe exactly that schema.
    engine = make_engine(database_url)
    with engine.connect() as connection, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (lower(last_name)); PostgreSQL compares them.
        warnings.filterwarnings("ignore", message=".*expression-based index")
        warnings.filterwarnings("ignore", message=".*unsupported reflection of expression")
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_schema_is_at_the_newest_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head_revision()
    engine.dispose()


@pytest.mark.slow
def test_db_upgrade_command_builds_an_empty_postgres_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = make_url(_psycopg(POSTGRES_URL))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    name = f"nurture_cli_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        env = os.environ | {"NURTURE_DATABASE_URL": url, "NURTURE_INSTANCE_PATH": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-m", "nurture", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "database migrated to head" in done.stdout
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        engine.dispose()
        assert {
            "users",
            "api_tokens",
            "login_attempts",
            "events",
            "worker_heartbeats",
            "alembic_version",
        } <= tables
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

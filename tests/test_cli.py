import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.auth.tokens import authenticate_token
from nurture.auth.users import get_user_by_email
from nurture.cli import cli
from tests.conftest import free_port


def test_user_create_and_token_create(runner: CliRunner, session: Session, clock) -> None:  # type: ignore[no-untyped-def]
    created = runner.invoke(
        cli, ["user", "create", "--email", "Ops@Nurture.Example", "--role", "admin"]
    )
    assert created.exit_code == 0, created.output
    assert "created admin ops@nurture.example" in created.output
    assert re.search(r"password \(shown once\): \S{20,}", created.output)
    user = get_user_by_email(session, "ops@nurture.example")
    assert user is not None and user.role == Role.ADMIN

    token = runner.invoke(
        cli, ["token", "create", "--user", "ops@nurture.example", "--name", "crm"]
    )
    assert token.exit_code == 0, token.output
    raw = token.output.strip()
    assert authenticate_token(session, raw, now=clock.now()) is not None


def test_cli_refuses_bad_input_with_a_message(runner: CliRunner) -> None:
    bad_email = runner.invoke(cli, ["user", "create", "--email", "nope", "--role", "sales"])
    assert bad_email.exit_code == 1
    assert "'nope' is not a valid email address" in bad_email.output
    no_user = runner.invoke(cli, ["token", "create", "--user", "x@nurture.example", "--name", "a"])
    assert no_user.exit_code == 1
    assert "no user with email x@nurture.example" in no_user.output


def test_ensure_admin_creates_one_admin_once(runner: CliRunner, session: Session) -> None:
    first = runner.invoke(cli, ["user", "ensure-admin"])
    assert first.exit_code == 0, first.output
    match = re.search(r"Log in as (\S+) with password (\S+) ", first.output)
    assert match and match.group(1) == "admin@example.com"
    second = runner.invoke(cli, ["user", "ensure-admin"])
    assert "Admin admin@example.com exists" in second.output
    assert match.group(2) not in second.output


def test_configuration_error_is_one_readable_line(tmp_path: Path) -> None:
    env = os.environ | {"NURTURE_INSTANCE_PATH": str(tmp_path), "NURTURE_ENV": "production"}
    env.pop("NURTURE_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "nurture", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "nurture: configuration error: NURTURE_DATABASE_URL is required in production "
        "(a PostgreSQL URL)"
    )


@pytest.mark.slow
def test_embedded_run_serves_the_login_page_and_the_printed_login_works(tmp_path: Path) -> None:
    # What `make run` does, on a fresh instance folder with the SQLite default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["NURTURE_INSTANCE_PATH"] = str(tmp_path)
    nurture = [sys.executable, "-m", "nurture"]
    subprocess.run([*nurture, "db", "upgrade"], env=env, check=True, capture_output=True)
    admin = subprocess.run(
        [*nurture, "user", "ensure-admin"], env=env, check=True, capture_output=True, text=True
    )
    match = re.search(r"Log in as (\S+) with password (\S+) ", admin.stdout)
    assert match, admin.stdout
    port = free_port()
    server = subprocess.Popen(
        [*nurture, "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/login", timeout=2) as response:
                    html = response.read().decode()
                    cookie = response.headers["Set-Cookie"].split(";")[0]
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        assert "Log in to nurture" in html
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        body = urllib.parse.urlencode(
            {"email": match.group(1), "password": match.group(2), "csrf_token": token}
        ).encode()
        request = urllib.request.Request(f"{base}/login", data=body, headers={"Cookie": cookie})

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(request, timeout=10)
        assert redirect.value.code == 302
        assert redirect.value.headers["Location"] == "/"
        # The embedded scheduler beats, so the instance reports ready.
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    assert response.status == 200
                    break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert f"nurture is running at http://127.0.0.1:{port}/" in output

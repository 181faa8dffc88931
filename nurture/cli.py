"""The ``nurture`` command: thin adapters over services, one unit of work per command."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, routes_command, shell_command

from nurture import create_app
from nurture.auth.passwords import PasswordPolicyError, generate_password
from nurture.auth.tokens import TokenError, create_token
from nurture.auth.users import (
    DEFAULT_ADMIN_EMAIL,
    UserError,
    create_user,
    ensure_admin,
    get_user_by_email,
    parse_role,
    set_password,
)
from nurture.config import ConfigError, load_settings
from nurture.consent.imported import ConsentImport, parse_proof
from nurture.contacts.activity_import import import_activities
from nurture.contacts.importer import ImportFileError, errors_csv, import_contacts, read_csv
from nurture.ops.logs import configure_logging
from nurture.state import Nurture, build_state
from nurture.worker import Worker, WorkerLockError


def _create_app() -> Flask:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


cli = FlaskGroup(
    name="nurture",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="nurture: email win-back and lead-nurturing automation.",
)
cli.add_command(shell_command)
cli.add_command(routes_command)


def _state() -> Nurture:
    return current_app.extensions["nurture"]  # type: ignore[no-any-return]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        click.echo(f"received {signal.Signals(signum).name}, finishing running jobs …", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- serving ----------------------------------------------------------------------------------


@cli.command("run", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def run_command(host: str, port: int, threads: int) -> None:
    """Embedded mode: web UI and scheduler in one process."""
    from waitress.server import create_server

    app = _create_app()
    state: Nurture = app.extensions["nurture"]
    worker = Worker(state, mode="embedded")
    try:
        worker.start()
    except WorkerLockError as exc:
        raise click.ClickException(str(exc)) from None
    server = create_server(app, host=host, port=port, threads=threads)
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    settings = state.settings
    click.echo(
        f"nurture is running at http://{host}:{port}/ "
        f"(database: {settings.database_url.split('://')[0]}, mail: {settings.mail_transport})"
    )
    try:
        server.run()
    except OSError:
        if not stop.is_set():
            raise
    finally:
        worker.shutdown()
        state.close()


@cli.command("worker", with_appcontext=False)
def worker_command() -> None:
    """Run the scheduler in the foreground (production); SIGTERM stops it gracefully."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    state = build_state(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        Worker(state, mode="worker").run_forever(stop)
    except WorkerLockError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        state.close()


# -- database -----------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """Database migrations (Alembic)."""


@db_group.command("upgrade", with_appcontext=False)
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the configured database to REVISION (default: the newest)."""
    from nurture.migrate import upgrade

    upgrade(load_settings().database_url, revision)
    click.echo(f"database migrated to {revision}")


@db_group.command("revision", with_appcontext=False)
@click.option("-m", "--message", required=True, help="What the change does.")
@click.option("--autogenerate/--empty", default=True, show_default=True)
def db_revision(message: str, autogenerate: bool) -> None:
    """Create a new migration from the difference between the models and the database."""
    from alembic import command

    from nurture.migrate import alembic_config

    command.revision(
        alembic_config(load_settings().database_url), message=message, autogenerate=autogenerate
    )


@db_group.command("current", with_appcontext=False)
def db_current() -> None:
    """Show the database's revision and the newest one."""
    from nurture.db import make_engine
    from nurture.migrate import current_revision, head_revision

    engine = make_engine(load_settings().database_url)
    click.echo(f"current: {current_revision(engine)}  head: {head_revision()}")
    engine.dispose()


# -- users and tokens -----------------------------------------------------------------------


@cli.group("user")
def user_group() -> None:
    """Manage user accounts."""


@user_group.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["admin", "marketer", "sales"]))
@click.option("--name", default="")
@click.option("--password", default=None, help="Generated and printed once when omitted.")
def user_create(email: str, role: str, name: str, password: str | None) -> None:
    """Create a user."""
    state = _state()
    generated = password is None
    password = password or generate_password()
    try:
        with state.db.session_scope() as session:
            user = create_user(
                session,
                email=email,
                role=parse_role(role),
                password=password,
                name=name,
                now=state.clock.now(),
            )
            email = user.email
    except (UserError, PasswordPolicyError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {role} {email}")
    if generated:
        click.echo(f"password (shown once): {password}")


@user_group.command("ensure-admin")
@click.option("--email", default=DEFAULT_ADMIN_EMAIL, show_default=True)
def user_ensure_admin(email: str) -> None:
    """Create a first admin if there is none, printing its password once."""
    state = _state()
    with state.db.session_scope() as session:
        user, password = ensure_admin(session, now=state.clock.now(), email=email)
        email = user.email
    if password:
        click.echo(f"Log in as {email} with password {password} (shown once; change it).")
    else:
        click.echo(
            f"Admin {email} exists (its password was printed when it was created; "
            f"reset it with: nurture user set-password --email {email})."
        )


@user_group.command("set-password")
@click.option("--email", required=True)
@click.option("--password", default=None, help="Generated and printed once when omitted.")
def user_set_password(email: str, password: str | None) -> None:
    """Set a user's password; ends the user's sessions."""
    state = _state()
    generated = password is None
    password = password or generate_password()
    try:
        with state.db.session_scope() as session:
            user = get_user_by_email(session, email)
            if user is None:
                raise click.ClickException(f"no user with email {email}")
            set_password(session, user, password)
    except PasswordPolicyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {email} changed")
    if generated:
        click.echo(f"password (shown once): {password}")


@cli.group("token")
def token_group() -> None:
    """Manage API tokens."""


@token_group.command("create")
@click.option("--user", "email", required=True, help="Email of the token's user.")
@click.option("--name", required=True, help="What the token is for.")
def token_create(email: str, name: str) -> None:
    """Create an API token and print it once."""
    state = _state()
    try:
        with state.db.session_scope() as session:
            user = get_user_by_email(session, email)
            if user is None:
                raise click.ClickException(f"no user with email {email}")
            _token, raw = create_token(session, user, name, now=state.clock.now())
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(raw)


# -- contacts -------------------------------------------------------------------------------


@cli.group("contacts")
def contacts_group() -> None:
    """Manage contacts."""


def _text_file(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise click.BadParameter(
            "the consent text must be UTF-8", param_hint="--consent-text-file"
        ) from None


@contacts_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, help='"CSV column=field"; auto-mapped if omitted.')
@click.option("--source", default="import", show_default=True, help="Source of new contacts.")
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the failed rows here as CSV for Excel.",
)
@click.option(
    "--consent-topic",
    "consent_topics",
    multiple=True,
    help="Slug of a topic the file's people consented to (repeat for more); needs the proof.",
)
@click.option("--consent-source", help="Where the consent was collected (form, event, …).")
@click.option("--consent-date", help="When it was collected: YYYY-MM-DD or DD.MM.YYYY.")
@click.option(
    "--consent-text-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The consent text the people agreed to, word for word (UTF-8).",
)
@click.option(
    "--consent-language", default="de", show_default=True, help="Language of the consent text."
)
@click.option(
    "--consent-all-rows",
    is_flag=True,
    help="Every row consented (instead of a column mapped to consent).",
)
def contacts_import(
    file: Path,
    maps: tuple[str, ...],
    source: str,
    errors_path: Path | None,
    consent_topics: tuple[str, ...],
    consent_source: str | None,
    consent_date: str | None,
    consent_text_file: Path | None,
    consent_language: str,
    consent_all_rows: bool,
) -> None:
    """Import contacts from a CSV file; exit 1 if rows failed, 2 if the file was refused.

    Consent comes along only with a proof reference for the whole file (--consent-topic,
    --consent-source, --consent-date, --consent-text-file) and then only for the rows whose
    column mapped to "consent" says yes, or for every row with --consent-all-rows.
    """
    state = _state()
    data = file.read_bytes()
    if any("=" not in m for m in maps):
        raise click.BadParameter('write each mapping as "CSV column=field"', param_hint="--map")
    mapping = dict(m.rsplit("=", 1) for m in maps) if maps else None
    with_proof = bool(
        consent_topics or consent_source or consent_date or consent_text_file or consent_all_rows
    )
    try:
        total = sum(1 for _row in read_csv(data)[1])
        bar = click.progressbar(length=total, label="importing", file=sys.stderr)
        with bar, state.db.session_scope() as session:
            now = state.clock.now()
            extension = None
            if with_proof:
                proof = parse_proof(
                    topics=consent_topics,
                    source=consent_source or "",
                    collected_on=consent_date or "",
                    text=_text_file(consent_text_file) if consent_text_file else "",
                    language=consent_language,
                    all_rows=consent_all_rows,
                )
                extension = ConsentImport(
                    session, proof, reference=file.name, file=file.name, now=now
                )
            report = import_contacts(
                session,
                data,
                mapping=mapping,
                now=now,
                source=source,
                on_batch=lambda report: bar.update(report.rows - bar.pos),
                suppression_secret=state.settings.suppression_secret,
                extension=extension,
            )
    except ImportFileError as exc:
        click.echo(f"nothing imported: {exc}", err=True)
        sys.exit(2)
    click.echo(
        f"imported {report.imported} rows: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.errors)} errors"
    )
    if with_proof:
        click.echo(
            f"consent: {report.consents_imported} recorded, {report.consents_skipped} skipped"
        )
    for error in report.errors:
        click.echo(f"line {error.line}: {error.message}")
    for note in report.notes:
        click.echo(f"line {note.line}: {note.message}")
    if errors_path is not None:
        errors_path.write_text(errors_csv(report), encoding="utf-8", newline="")
    sys.exit(1 if report.errors else 0)


# -- business events ------------------------------------------------------------------------


@cli.group("events")
def events_group() -> None:
    """Business events (orders, complaints, cancellations, …)."""


@events_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, help='"CSV column=field"; auto-mapped if omitted.')
@click.option(
    "--source", default="import", show_default=True, help="Source; ids are unique per source."
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the failed rows here as CSV for Excel.",
)
def events_import(file: Path, maps: tuple[str, ...], source: str, errors_path: Path | None) -> None:
    """Record business events from a CSV file; exit 1 if rows failed, 2 if the file was refused.

    Columns: email or customer_number, type, occurred_at (no offset: Berlin time), id, and the
    type's fields (amount, currency, order_id, reason, severity, product, period, text, by).
    """
    state = _state()
    data = file.read_bytes()
    if any("=" not in m for m in maps):
        raise click.BadParameter('write each mapping as "CSV column=field"', param_hint="--map")
    mapping = dict(m.rsplit("=", 1) for m in maps) if maps else None
    try:
        total = sum(1 for _row in read_csv(data)[1])
        bar = click.progressbar(length=total, label="importing", file=sys.stderr)
        with bar, state.db.session_scope() as session:
            report = import_activities(
                session,
                data,
                mapping=mapping,
                now=state.clock.now(),
                source=source,
                on_batch=lambda report: bar.update(report.rows - bar.pos),
            )
    except ImportFileError as exc:
        click.echo(f"nothing imported: {exc}", err=True)
        sys.exit(2)
    click.echo(
        f"recorded {report.created} events, {report.unchanged} already recorded, "
        f"{len(report.errors)} errors"
    )
    for error in report.errors:
        click.echo(f"line {error.line}: {error.message}")
    if errors_path is not None:
        errors_path.write_text(errors_csv(report), encoding="utf-8", newline="")
    sys.exit(1 if report.errors else 0)


def main() -> None:
    try:
        cli.main(prog_name="nurture")
    except ConfigError as exc:
        click.echo(f"nurture: configuration error: {exc}", err=True)
        sys.exit(2)

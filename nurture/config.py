"""Settings: defaults, then NURTURE_* environment variables, then validation.

This is the only module that reads ``os.environ``. Everything else receives a ``Settings``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

ENVIRONMENTS = ("embedded", "production")
TRANSPORTS = ("capture", "smtp")
LOG_FORMATS = ("plain", "json")
DEFAULT_INSTANCE = Path(__file__).resolve().parent.parent / "instance"


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0
    # A private CA for an internal relay; the system's trust store otherwise.
    ca_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    env: str = "embedded"
    instance_path: Path = DEFAULT_INSTANCE
    database_url: str = ""
    secret_key: str = field(default="", repr=False)
    base_url: str = "http://127.0.0.1:5000"
    mail_transport: str = "capture"
    smtp: SmtpSettings | None = None
    mail_from: str = "nurture@example.com"
    mail_from_name: str = "nurture"
    log_format: str = "plain"
    log_level: str = "INFO"
    # The worker beats this often; a beat older than worker_stale_seconds means "not alive".
    heartbeat_seconds: int = 10
    worker_stale_seconds: int = 60
    # Jobs that missed their slot by more than this (a paused process, a long GC) are skipped
    # rather than run late; coalesce folds the backlog into one run.
    misfire_grace_seconds: int = 30
    session_idle_minutes: int = 120
    login_max_failures: int = 5
    login_lock_minutes: int = 15
    max_request_bytes: int = 16 * 1024 * 1024
    # Mail identity: Message-IDs, VERP return paths and reply addresses live on this domain.
    mail_domain: str = "example.com"
    # Sender identity and imprint printed in every mail's footer (UWG §7, DDG §5).
    sender_imprint: tuple[str, ...] = ("nurture demo", "Musterstraße 1", "10115 Berlin")
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: Path | None = None
    # Outbox and SMTP delivery.
    outbox_interval_seconds: int = 5
    outbox_batch: int = 100
    outbox_lease_seconds: int = 300
    send_lateness_hours: int = 24
    smtp_connections: int = 2
    smtp_max_attempts: int = 8
    smtp_rate_per_minute: int = 0
    smtp_rate_per_hour: int = 0
    smtp_domain_rate_per_minute: int = 0
    # Consent. A confirmation link lives this long (at most 30 days); a consent with no sign of
    # life for this many months no longer carries marketing mail (courts have treated long
    # silence as lapsed consent).
    optin_expiry_days: int = 7
    consent_dormancy_months: int = 24
    # Keys the suppression list's address hashes. Outside the database by design, and separate
    # from the secret key so rotating that does not forget who objected.
    suppression_secret: str = field(default="", repr=False)
    # Sign-ups per IP address per hour through forms and the API (bots), and confirmation
    # mails per address per day (no confirmation storm on a re-request).
    signup_rate_per_ip_hour: int = 20
    optin_mails_per_address_day: int = 3
    # Advertise mailto:unsubscribe+TOKEN@mail_domain in List-Unsubscribe only when mail to that
    # address reaches nurture; an address nobody reads would be a broken promise.
    unsubscribe_mailto: bool = False
    # Reverse proxies in front of nurture whose X-Forwarded-For/-Proto/-Host to trust. The
    # client's IP is evidence in the consent ledger and the key of the sign-up limit, so it must
    # be the visitor's, not the proxy's; 0 trusts no header (a direct exposure).
    trusted_proxies: int = 0
    testing: bool = False

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests, CLI flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_smtp_url(url: str) -> SmtpSettings:
    """Parse ``smtp://user:pass@host:port?starttls=1`` or ``smtps://...``."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(
            "NURTURE_SMTP_URL must start with smtp:// or smtps://, "
            f"got {parts.scheme or 'nothing'!r}"
        )
    if not parts.hostname:
        raise ConfigError(
            "NURTURE_SMTP_URL has no host, e.g. smtp://relay.example.org:587?starttls=1"
        )
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes")
    ssl = parts.scheme == "smtps"
    if ssl and starttls:
        raise ConfigError("NURTURE_SMTP_URL: smtps:// is already TLS; drop ?starttls=1")
    try:
        port = parts.port or (465 if ssl else 25)
    except ValueError as exc:
        raise ConfigError(f"NURTURE_SMTP_URL has an invalid port: {exc}") from None
    try:
        timeout = float(query.get("timeout", ["30"])[0])
    except ValueError:
        raise ConfigError("NURTURE_SMTP_URL: ?timeout= must be a number of seconds") from None
    ca_file = query.get("cafile", [""])[0]
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"NURTURE_SMTP_URL: ?cafile={ca_file} does not exist")
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=starttls,
        ssl=ssl,
        timeout=timeout,
        ca_file=Path(ca_file) if ca_file else None,
    )


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _suppression_secret(env: Mapping[str, str], secret_key: str) -> str:
    explicit = env.get("NURTURE_SUPPRESSION_SECRET", "")
    if explicit:
        if len(explicit) < 32:
            raise ConfigError("NURTURE_SUPPRESSION_SECRET must be at least 32 characters")
        return explicit
    # Derived, not equal: a leaked hash list must not help anyone guess the session secret.
    return hmac.new(secret_key.encode(), b"nurture.suppression", hashlib.sha256).hexdigest()


def _embedded_secret(instance_path: Path) -> str:
    """Generate the secret once and keep it, so sessions and signed links survive restarts."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build validated settings from the environment; raise ConfigError with a readable message."""
    env = os.environ if environ is None else environ
    mode = _choice(env, "NURTURE_ENV", "embedded", ENVIRONMENTS)
    instance_path = Path(env.get("NURTURE_INSTANCE_PATH") or DEFAULT_INSTANCE).resolve()

    database_url = env.get("NURTURE_DATABASE_URL", "")
    if not database_url:
        if mode == "production":
            raise ConfigError("NURTURE_DATABASE_URL is required in production (a PostgreSQL URL)")
        instance_path.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{instance_path / 'nurture.sqlite3'}"
    # psycopg 3 is the driver we ship; accept the plain postgresql:// spelling.
    if database_url.startswith(("postgresql://", "postgres://")):
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    if not database_url.startswith(("sqlite", "postgresql+psycopg")):
        raise ConfigError(
            "NURTURE_DATABASE_URL must be a sqlite:/// or postgresql:// URL, "
            f"got {database_url.split(':', 1)[0]!r}"
        )

    secret_key = env.get("NURTURE_SECRET_KEY", "")
    if not secret_key:
        if mode == "production":
            raise ConfigError(
                "NURTURE_SECRET_KEY is required in production; generate one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        secret_key = _embedded_secret(instance_path)
    elif len(secret_key) < 32:
        raise ConfigError("NURTURE_SECRET_KEY must be at least 32 characters long")

    base_url = (env.get("NURTURE_BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"NURTURE_BASE_URL must be an http(s) URL, got {base_url!r}")
    if mode == "production" and parts.scheme != "https":
        raise ConfigError("NURTURE_BASE_URL must use https:// in production (links in mails)")

    transport = _choice(env, "NURTURE_MAIL_TRANSPORT", "capture", TRANSPORTS)
    smtp = None
    smtp_url = env.get("NURTURE_SMTP_URL", "")
    if smtp_url:
        smtp = parse_smtp_url(smtp_url)
    elif transport == "smtp":
        raise ConfigError("NURTURE_MAIL_TRANSPORT=smtp needs NURTURE_SMTP_URL")

    # A local base URL (127.0.0.1, localhost) has no mail domain; example.com marks the default
    # as a placeholder in captured mail.
    host_is_domain = "." in parts.hostname and not parts.hostname.replace(".", "").isdigit()
    default_from = f"nurture@{parts.hostname}" if host_is_domain else "nurture@example.com"
    mail_from = env.get("NURTURE_MAIL_FROM") or default_from
    try:
        # No DNS: the sender domain may be internal or not resolvable from this host.
        mail_from = validate_email(
            mail_from, check_deliverability=False, globally_deliverable=False
        ).normalized
    except EmailNotValidError as exc:
        raise ConfigError(f"NURTURE_MAIL_FROM is not a valid address: {exc}") from None

    mail_domain = env.get("NURTURE_MAIL_DOMAIN") or mail_from.rsplit("@", 1)[1]
    imprint_raw = env.get("NURTURE_SENDER_IMPRINT", "")
    if not imprint_raw and mode == "production":
        raise ConfigError(
            "NURTURE_SENDER_IMPRINT is required in production: the sender's name and postal "
            "address, lines separated by '|', printed in every mail (UWG §7, DDG §5)"
        )
    imprint = tuple(line.strip() for line in imprint_raw.split("|") if line.strip()) or (
        Settings.sender_imprint
    )
    dkim_key = env.get("NURTURE_DKIM_KEY_FILE") or None
    dkim_selector = env.get("NURTURE_DKIM_SELECTOR") or None
    if bool(dkim_key) != bool(dkim_selector):
        raise ConfigError("DKIM needs both NURTURE_DKIM_SELECTOR and NURTURE_DKIM_KEY_FILE")
    if dkim_key and not Path(dkim_key).is_file():
        raise ConfigError(f"NURTURE_DKIM_KEY_FILE {dkim_key!r} does not exist")

    optin_expiry_days = _int(env, "NURTURE_OPTIN_EXPIRY_DAYS", 7)
    if optin_expiry_days > 30:
        raise ConfigError(f"NURTURE_OPTIN_EXPIRY_DAYS must be at most 30, got {optin_expiry_days}")
    return Settings(
        env=mode,
        instance_path=instance_path,
        database_url=database_url,
        secret_key=secret_key,
        base_url=base_url,
        mail_transport=transport,
        smtp=smtp,
        mail_from=mail_from,
        mail_from_name=env.get("NURTURE_MAIL_FROM_NAME") or "nurture",
        log_format=_choice(env, "NURTURE_LOG_FORMAT", "plain", LOG_FORMATS),
        log_level=_choice(env, "NURTURE_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        heartbeat_seconds=_int(env, "NURTURE_HEARTBEAT_SECONDS", 10),
        worker_stale_seconds=_int(env, "NURTURE_WORKER_STALE_SECONDS", 60),
        misfire_grace_seconds=_int(env, "NURTURE_MISFIRE_GRACE_SECONDS", 30),
        session_idle_minutes=_int(env, "NURTURE_SESSION_IDLE_MINUTES", 120),
        login_max_failures=_int(env, "NURTURE_LOGIN_MAX_FAILURES", 5),
        login_lock_minutes=_int(env, "NURTURE_LOGIN_LOCK_MINUTES", 15),
        max_request_bytes=_int(env, "NURTURE_MAX_REQUEST_BYTES", 16 * 1024 * 1024, 1024),
        mail_domain=mail_domain,
        sender_imprint=imprint,
        dkim_selector=dkim_selector,
        dkim_domain=env.get("NURTURE_DKIM_DOMAIN") or (mail_domain if dkim_key else None),
        dkim_key_file=Path(dkim_key) if dkim_key else None,
        outbox_interval_seconds=_int(env, "NURTURE_OUTBOX_INTERVAL_SECONDS", 5),
        outbox_batch=_int(env, "NURTURE_OUTBOX_BATCH", 100),
        outbox_lease_seconds=_int(env, "NURTURE_OUTBOX_LEASE_SECONDS", 300),
        send_lateness_hours=_int(env, "NURTURE_SEND_LATENESS_HOURS", 24),
        smtp_connections=_int(env, "NURTURE_SMTP_CONNECTIONS", 2),
        smtp_max_attempts=_int(env, "NURTURE_SMTP_MAX_ATTEMPTS", 8),
        smtp_rate_per_minute=_int(env, "NURTURE_SMTP_RATE_PER_MINUTE", 0, 0),
        smtp_rate_per_hour=_int(env, "NURTURE_SMTP_RATE_PER_HOUR", 0, 0),
        smtp_domain_rate_per_minute=_int(env, "NURTURE_SMTP_DOMAIN_RATE_PER_MINUTE", 0, 0),
        optin_expiry_days=optin_expiry_days,
        consent_dormancy_months=_int(env, "NURTURE_CONSENT_DORMANCY_MONTHS", 24),
        suppression_secret=_suppression_secret(env, secret_key),
        signup_rate_per_ip_hour=_int(env, "NURTURE_SIGNUP_RATE_PER_IP_HOUR", 20),
        optin_mails_per_address_day=_int(env, "NURTURE_OPTIN_MAILS_PER_ADDRESS_DAY", 3),
        unsubscribe_mailto=_choice(env, "NURTURE_UNSUBSCRIBE_MAILTO", "0", ("0", "1")) == "1",
        trusted_proxies=_int(env, "NURTURE_TRUSTED_PROXIES", 0, 0),
    )

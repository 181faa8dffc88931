from pathlib import Path

import pytest

from nurture.config import ConfigError, load_settings, parse_smtp_url


def test_embedded_defaults_use_sqlite_and_keep_a_generated_secret(tmp_path: Path) -> None:
    env = {"NURTURE_INSTANCE_PATH": str(tmp_path)}
    first = load_settings(env)
    second = load_settings(env)
    assert first.database_url == f"sqlite:///{tmp_path / 'nurture.sqlite3'}"
    assert first.mail_transport == "capture"
    assert len(first.secret_key) >= 32
    # Generated once, then reused: sessions survive a restart.
    assert second.secret_key == first.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_postgres_url_is_given_the_psycopg_driver(tmp_path: Path) -> None:
    env = {"NURTURE_INSTANCE_PATH": str(tmp_path), "NURTURE_DATABASE_URL": "postgresql://u@h/db"}
    assert load_settings(env).database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NURTURE_ENV": "production"}, "NURTURE_DATABASE_URL is required in production"),
        (
            {"NURTURE_ENV": "production", "NURTURE_DATABASE_URL": "postgresql://x/y"},
            "NURTURE_SECRET_KEY is required in production",
        ),
        (
            {
                "NURTURE_ENV": "production",
                "NURTURE_DATABASE_URL": "postgresql://x/y",
                "NURTURE_SECRET_KEY": "k" * 40,
                "NURTURE_BASE_URL": "http://nurture.example",
            },
            "NURTURE_BASE_URL must use https:// in production",
        ),
        ({"NURTURE_ENV": "staging"}, "NURTURE_ENV must be one of embedded, production"),
        ({"NURTURE_SECRET_KEY": "short"}, "NURTURE_SECRET_KEY must be at least 32 characters"),
        ({"NURTURE_DATABASE_URL": "mysql://x/y"}, "must be a sqlite:/// or postgresql:// URL"),
        ({"NURTURE_MAIL_TRANSPORT": "smtp"}, "NURTURE_MAIL_TRANSPORT=smtp needs NURTURE_SMTP_URL"),
        ({"NURTURE_MAIL_TRANSPORT": "sendmail"}, "NURTURE_MAIL_TRANSPORT must be one of"),
        ({"NURTURE_SMTP_URL": "http://relay"}, "must start with smtp:// or smtps://"),
        (
            {"NURTURE_SMTP_URL": "smtp://relay?cafile=/no/ca.pem"},
            "?cafile=/no/ca.pem does not exist",
        ),
        (
            {
                "NURTURE_ENV": "production",
                "NURTURE_DATABASE_URL": "postgresql://x/y",
                "NURTURE_SECRET_KEY": "k" * 40,
                "NURTURE_BASE_URL": "https://n.example",
            },
            "NURTURE_SENDER_IMPRINT is required in production",
        ),
        ({"NURTURE_DKIM_SELECTOR": "s1"}, "DKIM needs both NURTURE_DKIM_SELECTOR and"),
        ({"NURTURE_MAIL_FROM": "not an address"}, "NURTURE_MAIL_FROM is not a valid address"),
        ({"NURTURE_HEARTBEAT_SECONDS": "soon"}, "NURTURE_HEARTBEAT_SECONDS must be a whole number"),
        ({"NURTURE_HEARTBEAT_SECONDS": "0"}, "NURTURE_HEARTBEAT_SECONDS must be at least 1"),
        ({"NURTURE_LOG_FORMAT": "xml"}, "NURTURE_LOG_FORMAT must be one of plain, json"),
        ({"NURTURE_BASE_URL": "nurture.example"}, "NURTURE_BASE_URL must be an http(s) URL"),
    ],
)
def test_bad_settings_stop_start_up_with_a_readable_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"NURTURE_INSTANCE_PATH": str(tmp_path), **env})
    assert message in str(excinfo.value)


def test_smtp_url_forms() -> None:
    plain = parse_smtp_url("smtp://relay.example.org")
    assert (plain.host, plain.port, plain.starttls, plain.ssl) == (
        "relay.example.org",
        25,
        False,
        False,
    )
    submission = parse_smtp_url("smtp://user%40corp:p%25ss@relay.example.org:587?starttls=1")
    assert submission.port == 587 and submission.starttls
    assert (submission.username, submission.password) == ("user@corp", "p%ss")
    tls = parse_smtp_url("smtps://relay.example.org?timeout=5")
    assert (tls.port, tls.ssl, tls.timeout) == (465, True, 5.0)
    with pytest.raises(ConfigError, match="drop \\?starttls=1"):
        parse_smtp_url("smtps://relay.example.org?starttls=1")
    with pytest.raises(ConfigError, match="has no host"):
        parse_smtp_url("smtp://")


def test_https_base_url_turns_on_secure_cookies(tmp_path: Path) -> None:
    env = {"NURTURE_INSTANCE_PATH": str(tmp_path), "NURTURE_BASE_URL": "https://n.example/"}
    settings = load_settings(env)
    assert settings.base_url == "https://n.example"
    assert settings.secure_cookies
    assert settings.mail_from == "nurture@n.example"

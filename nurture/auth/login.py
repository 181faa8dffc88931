"""Password login with throttling against guessing."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from nurture.auth.models import LoginAttempt, User
from nurture.auth.passwords import hash_password, needs_rehash, verify_password

# One address behind many accounts (an office NAT) may fail more often than one person does;
# a password-spraying client trying many accounts hits this limit.
IP_FAILURE_FACTOR = 4


class LoginFailure(enum.StrEnum):
    INVALID = "invalid"
    LOCKED = "locked"


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    failure: LoginFailure | None = None
    retry_after: timedelta | None = None


def _failures_since(session: Session, column: object, value: str, since: datetime) -> int:
    stmt = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(column == value, LoginAttempt.at >= since, LoginAttempt.succeeded.is_(False))
    )
    return session.scalar(stmt) or 0


def _lock_remaining(
    session: Session, email: str, ip: str, *, now: datetime, max_failures: int, lock: timedelta
) -> timedelta | None:
    since = now - lock
    last_success = session.scalar(
        select(func.max(LoginAttempt.at)).where(
            LoginAttempt.email == email, LoginAttempt.succeeded.is_(True), LoginAttempt.at >= since
        )
    )
    window_start = max(since, last_success) if last_success else since
    email_failures = _failures_since(session, LoginAttempt.email, email, window_start)
    ip_failures = _failures_since(session, LoginAttempt.ip, ip, since)
    if email_failures < max_failures and ip_failures < max_failures * IP_FAILURE_FACTOR:
        return None
    newest = session.scalar(
        select(func.max(LoginAttempt.at)).where(
            (LoginAttempt.email == email) | (LoginAttempt.ip == ip),
            LoginAttempt.succeeded.is_(False),
        )
    )
    assert newest is not None
    return max(newest + lock - now, timedelta(seconds=1))


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    ip: str,
    now: datetime,
    max_failures: int,
    lock_minutes: int,
) -> LoginResult:
    """Check a login; after ``max_failures`` failures the address is locked for a while."""
    email = email.strip().lower()
    lock = timedelta(minutes=lock_minutes)
    remaining = _lock_remaining(session, email, ip, now=now, max_failures=max_failures, lock=lock)
    if remaining is not None:
        # Attempts during a lock are not recorded, so a locked account unlocks on time even
        # while someone keeps hammering it.
        return LoginResult(None, LoginFailure.LOCKED, remaining)
    user = session.scalar(select(User).where(User.email == email))
    ok = verify_password(user.password_hash if user else None, password)
    ok = ok and user is not None and user.active
    session.add(LoginAttempt(email=email, ip=ip, succeeded=ok, at=now))
    if not ok or user is None:
        session.flush()
        return LoginResult(None, LoginFailure.INVALID)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    session.flush()
    return LoginResult(user)


def purge_login_attempts(session: Session, *, now: datetime, keep_days: int = 30) -> int:
    """Delete attempts older than ``keep_days`` (they hold IP addresses: keep them short)."""
    result = session.execute(
        delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=keep_days))
    )
    return result.rowcount or 0

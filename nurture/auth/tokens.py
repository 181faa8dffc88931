"""API tokens: shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import ApiToken, User
from nurture.errors import N_, UserFacingError

TOKEN_PREFIX = "nrt_"
# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(UserFacingError):
    """A token operation was refused."""


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_token(session: Session, user: User, name: str, *, now: datetime) -> tuple[ApiToken, str]:
    """Create a token for ``user``; the raw token is returned here and never again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TokenError(N_("A token needs a name of 1 to 100 characters."))
    if not user.active:
        raise TokenError(N_("%(email)s is deactivated and cannot get a token."), email=user.email)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user,
        name=name,
        token_hash=_digest(raw),
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        created_at=now,
    )
    session.add(token)
    session.flush()
    return token, raw


def authenticate_token(session: Session, raw: str, *, now: datetime) -> ApiToken | None:
    """The live token for ``raw`` (not revoked, owner active), or None."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(raw)))
    if token is None or token.is_revoked or not token.user.active:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.flush()
    return token


def revoke_token(session: Session, token: ApiToken, *, now: datetime) -> None:
    if token.revoked_at is None:
        token.revoked_at = now
        session.flush()


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at.desc())
    return list(session.scalars(stmt))


def get_user_token(session: Session, user: User, token_id: int) -> ApiToken | None:
    return session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
    )

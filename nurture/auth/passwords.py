"""Password hashing (Argon2id) and the password policy."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nurture.errors import N_, UserFacingError

MIN_LENGTH = 12
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the response time the same, so the
# login form does not reveal which addresses have accounts.
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


class PasswordPolicyError(UserFacingError):
    """The password does not meet the policy; the message says why."""


def check_password_policy(password: str, *, email: str = "") -> None:
    """Refuse passwords that are short or trivially guessable."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(
            N_("The password must be at least %(length)d characters long."), length=MIN_LENGTH
        )
    local_part = email.split("@")[0].lower()
    # Short names ("al") occur inside many good passwords by chance; only longer ones are a hint.
    if len(local_part) >= 4 and local_part in password.lower():
        raise PasswordPolicyError(N_("The password must not contain the email address."))
    if len(set(password)) < 5:
        raise PasswordPolicyError(N_("The password needs more different characters."))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; always spends the same time, even without a hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    """A random password that satisfies the policy (printed once by the CLI)."""
    return secrets.token_urlsafe(18)

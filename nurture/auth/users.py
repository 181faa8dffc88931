"""Managing user accounts."""

from __future__ import annotations

from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.auth.passwords import check_password_policy, generate_password, hash_password
from nurture.errors import N_, UserFacingError

DEFAULT_ADMIN_EMAIL = "admin@example.com"


class UserError(UserFacingError):
    """A user operation was refused; the message is meant for the person who asked."""


def normalise_login_email(email: str) -> str:
    """Validate syntax (no DNS) and fold case, so one person has one login."""
    email = email.strip()
    try:
        # Staff logins may live on internal or test domains; only the syntax matters here.
        result = validate_email(
            email, check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except EmailNotValidError as exc:
        raise UserError(
            N_("%(email)s is not a valid email address: %(reason)s"), email=repr(email), reason=exc
        ) from None
    return result.normalized.lower()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise UserError(
            N_("Unknown role %(role)s; choose one of %(choices)s."),
            role=repr(value),
            choices=choices,
        ) from None


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def create_user(
    session: Session, *, email: str, role: Role, password: str, now: datetime, name: str = ""
) -> User:
    """Create an account; refuse a duplicate email or a weak password."""
    email = normalise_login_email(email)
    if get_user_by_email(session, email) is not None:
        raise UserError(N_("A user with the email %(email)s already exists."), email=email)
    check_password_policy(password, email=email)
    user = User(
        email=email,
        name=name.strip(),
        role=role,
        password_hash=hash_password(password),
        active=True,
        created_at=now,
        session_version=1,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Change the password and end every existing session of this user."""
    check_password_policy(password, email=user.email)
    user.password_hash = hash_password(password)
    user.session_version += 1
    session.flush()


def _active_admins(session: Session) -> int:
    stmt = select(func.count()).select_from(User).where(User.role == Role.ADMIN, User.active)
    return session.scalar(stmt) or 0


def set_role(session: Session, user: User, role: Role, *, acting: User) -> None:
    """Change a role; the last active admin cannot demote themselves out of the system."""
    demotes_admin = user.role == Role.ADMIN and role != Role.ADMIN and user.active
    if demotes_admin and _active_admins(session) <= 1:
        raise UserError(N_("The last active admin cannot lose the admin role."))
    user.role = role
    user.session_version += 1
    session.flush()


def set_active(session: Session, user: User, active: bool, *, acting: User) -> None:
    """Deactivate or reactivate an account; deactivation ends its sessions at once."""
    if not active:
        if user.id == acting.id:
            raise UserError(N_("You cannot deactivate your own account."))
        if user.role == Role.ADMIN and user.active and _active_admins(session) <= 1:
            raise UserError(N_("The last active admin cannot be deactivated."))
        user.session_version += 1
    user.active = active
    session.flush()


def ensure_admin(
    session: Session, *, now: datetime, email: str = DEFAULT_ADMIN_EMAIL
) -> tuple[User, str | None]:
    """Create a first admin when there is none; return it and its password if newly made."""
    existing = session.scalar(
        select(User).where(User.role == Role.ADMIN, User.active).order_by(User.id).limit(1)
    )
    if existing is not None:
        return existing, None
    password = generate_password()
    user = create_user(
        session, email=email, role=Role.ADMIN, password=password, now=now, name="Administrator"
    )
    return user, password


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))

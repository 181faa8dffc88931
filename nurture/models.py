"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, drift test)."""

from nurture.auth.models import ApiToken, LoginAttempt, User
from nurture.db import Base
from nurture.events import Event
from nurture.ops.models import WorkerHeartbeat

__all__ = ["ApiToken", "Base", "Event", "LoginAttempt", "User", "WorkerHeartbeat"]

"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, drift test)."""

from nurture.auth.models import ApiToken, LoginAttempt, User
from nurture.contacts.models import Contact
from nurture.db import Base
from nurture.events import Event
from nurture.mail.models import (
    CapturedMail,
    EmailTemplate,
    Message,
    TemplateVersion,
)
from nurture.ops.models import WorkerHeartbeat

__all__ = [
    "ApiToken",
    "Base",
    "CapturedMail",
    "Contact",
    "EmailTemplate",
    "Event",
    "LoginAttempt",
    "Message",
    "TemplateVersion",
    "User",
    "WorkerHeartbeat",
]

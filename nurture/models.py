"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, drift test)."""

from nurture.auth.models import ApiToken, LoginAttempt, User
from nurture.consent.models import (
    Consent,
    ConsentEntry,
    ConsentRequest,
    ConsentText,
    SignupAttempt,
    SignupForm,
    Suppression,
    Topic,
)
from nurture.contacts.models import Contact, CustomField, DuplicateDismissal, ImportJob, Segment
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
    "Consent",
    "ConsentEntry",
    "ConsentRequest",
    "ConsentText",
    "Contact",
    "CustomField",
    "DuplicateDismissal",
    "EmailTemplate",
    "Event",
    "ImportJob",
    "LoginAttempt",
    "Message",
    "Segment",
    "SignupAttempt",
    "SignupForm",
    "Suppression",
    "TemplateVersion",
    "Topic",
    "User",
    "WorkerHeartbeat",
]

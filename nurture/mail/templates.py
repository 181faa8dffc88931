"""Email templates as data: create, version, preview and test-send."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.errors import N_, UserFacingError
from nurture.mail import outbox
from nurture.mail.models import EmailTemplate, Message, Purpose, TemplateVersion
from nurture.mail.render import RenderedMail, TemplateSource, check_template, sample_context

LAYOUTS = ("default", "none")


class TemplateInputError(UserFacingError):
    """The template form has a problem the marketer can fix."""


@dataclass(frozen=True)
class TemplateDraft:
    subject: str
    html: str
    text: str | None = None
    css: str = ""
    layout: str = "default"

    def source(self) -> TemplateSource:
        return TemplateSource(
            subject=self.subject,
            html=self.html,
            text=self.text or None,
            layout=None if self.layout == "none" else self.layout,
            css=self.css,
        )


def version_source(version: TemplateVersion) -> TemplateSource:
    return TemplateSource(
        subject=version.subject,
        html=version.html,
        text=version.text,
        layout=version.layout,
        css=version.css,
    )


def preview(draft: TemplateDraft, *, imprint: tuple[str, ...], lang: str = "de") -> RenderedMail:
    """Render with sample data; raises TemplateError naming the problem."""
    return check_template(draft.source(), sample_context(lang=lang, imprint=imprint))


def _validate(draft: TemplateDraft, imprint: tuple[str, ...]) -> None:
    if not draft.subject.strip():
        raise TemplateInputError(N_("The subject must not be empty."))
    if draft.layout not in LAYOUTS:
        raise TemplateInputError(N_("Unknown layout %(layout)s."), layout=draft.layout)
    # A template must render for both languages before it can be saved: no half-rendered
    # mail at send time.
    for lang in ("de", "en"):
        preview(draft, imprint=imprint, lang=lang)


def create_template(
    session: Session,
    *,
    name: str,
    draft: TemplateDraft,
    now: datetime,
    imprint: tuple[str, ...],
    description: str = "",
    user_id: int | None = None,
) -> EmailTemplate:
    """Create a template with its first version."""
    name = name.strip()
    if not name or len(name) > 200:
        raise TemplateInputError(N_("A template needs a name of 1 to 200 characters."))
    if session.scalar(select(EmailTemplate.id).where(EmailTemplate.name == name)) is not None:
        raise TemplateInputError(N_("A template named %(name)s already exists."), name=name)
    _validate(draft, imprint)
    template = EmailTemplate(name=name, description=description.strip(), created_at=now)
    _insert(session, template)
    _add_version(session, template, draft, now=now, user_id=user_id, number=1)
    return template


def _add_version(
    session: Session,
    template: EmailTemplate,
    draft: TemplateDraft,
    *,
    now: datetime,
    user_id: int | None,
    number: int,
) -> TemplateVersion:
    version = TemplateVersion(
        template_id=template.id,
        number=number,
        subject=draft.subject,
        html=draft.html,
        text=draft.text or None,
        css=draft.css,
        layout=None if draft.layout == "none" else draft.layout,
        created_at=now,
        created_by_id=user_id,
    )
    _insert(session, version)
    return version


def _insert(session: Session, row: object) -> None:
    # Two marketers saving at the same moment race for the same name or version number; the
    # unique constraint decides, and the loser gets a message instead of a 500.
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise TemplateInputError(
            N_("Someone else saved this at the same moment. Reload the page and try again.")
        ) from None


def save_version(
    session: Session,
    template: EmailTemplate,
    draft: TemplateDraft,
    *,
    now: datetime,
    imprint: tuple[str, ...],
    user_id: int | None = None,
) -> TemplateVersion:
    """Editing never changes a version: it adds one (or returns the latest if nothing changed)."""
    _validate(draft, imprint)
    latest = latest_version(session, template.id)
    if latest is not None and version_source(latest) == draft.source():
        return latest
    number = (latest.number if latest else 0) + 1
    return _add_version(session, template, draft, now=now, user_id=user_id, number=number)


def latest_version(session: Session, template_id: int) -> TemplateVersion | None:
    return session.scalar(
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.number.desc())
        .limit(1)
    )


def list_templates(session: Session) -> list[tuple[EmailTemplate, TemplateVersion | None, int]]:
    """Templates with their latest version and how many messages were sent from any version."""
    templates = list(
        session.scalars(
            select(EmailTemplate)
            .where(EmailTemplate.archived_at.is_(None))
            .order_by(EmailTemplate.name)
        )
    )
    sent = dict(
        session.execute(
            select(TemplateVersion.template_id, func.count(Message.id))
            .join(Message, Message.template_version_id == TemplateVersion.id)
            .where(Message.sent_at.is_not(None))
            .group_by(TemplateVersion.template_id)
        ).all()
    )
    return [(t, latest_version(session, t.id), int(sent.get(t.id, 0))) for t in templates]


def enqueue_test_mail(
    session: Session,
    version: TemplateVersion,
    *,
    to_addr: str,
    to_name: str,
    now: datetime,
    context: dict[str, Any] | None = None,
) -> Message:
    """Queue a test mail of ``version`` to a marketer, with sample data."""
    data = context or sample_context_data()
    message = outbox.enqueue(
        session,
        key=f"test:{version.id}:{uuid.uuid4().hex}",
        purpose=Purpose.TEST,
        to_addr=to_addr,
        to_name=to_name,
        context=data,
        template_version_id=version.id,
        now=now,
    )
    assert message is not None  # the key is fresh
    return message


def sample_context_data(lang: str = "de") -> dict[str, Any]:
    """The JSON-storable part of the sample context (no callables)."""
    return {k: v for k, v in sample_context(lang=lang).items() if not callable(v)}

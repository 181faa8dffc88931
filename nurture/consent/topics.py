"""Topics: what a contact can consent to (marketing topics and the tracking consent)."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.consent.models import Topic, TopicKind
from nurture.errors import N_, UserFacingError

SLUG_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
MAX_NAME = 100
MAX_DESCRIPTION = 2000
TAKEN = N_("A topic with the slug %(slug)s exists already.")


class TopicError(UserFacingError):
    """A topic that cannot be created as asked; ``field`` names the input it concerns."""

    def __init__(self, message: str, *, field: str | None = None, **params: object) -> None:
        super().__init__(message, **params)
        self.field = field


def create_topic(
    session: Session,
    *,
    name: str,
    slug: str,
    kind: TopicKind | str,
    own_similar_products: bool,
    description: str,
    now: datetime,
) -> Topic:
    """A new topic; its slug names it in forms, the API and the outbox and never changes."""
    name = " ".join(name.split())
    slug = slug.strip()
    if not name:
        raise TopicError(N_("Give the topic a name."), field="name")
    if len(name) > MAX_NAME:
        raise TopicError(
            N_("The name is longer than %(max)d characters."), field="name", max=MAX_NAME
        )
    if not SLUG_RE.fullmatch(slug):
        raise TopicError(
            N_(
                "The slug must start with a lower-case letter and hold only lower-case letters, "
                "digits and hyphens (at most 64)."
            ),
            field="slug",
        )
    try:
        kind = TopicKind(kind)
    except ValueError:
        raise TopicError(N_("The kind must be marketing or tracking."), field="kind") from None
    if kind is TopicKind.TRACKING and own_similar_products:
        # §7(3) UWG covers advertising for similar products, never open and click tracking.
        raise TopicError(
            N_("Only a marketing topic can be about the sender's own similar products."),
            field="own_similar_products",
        )
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise TopicError(
            N_("The description is longer than %(max)d characters."),
            field="description",
            max=MAX_DESCRIPTION,
        )
    if session.scalar(select(Topic.id).where(Topic.slug == slug)) is not None:
        raise TopicError(TAKEN, field="slug", slug=slug)
    topic = Topic(
        name=name,
        slug=slug,
        kind=kind,
        own_similar_products=own_similar_products,
        description=description,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(topic)
    except IntegrityError:
        # Someone created the same slug a moment ago.
        raise TopicError(TAKEN, field="slug", slug=slug) from None
    return topic


def list_topics(session: Session) -> list[Topic]:
    """Marketing topics first, then tracking; by name."""
    topics = session.scalars(select(Topic).order_by(Topic.name, Topic.id)).all()
    return sorted(topics, key=lambda t: t.kind is not TopicKind.MARKETING)


def topics_by_id(session: Session) -> dict[int, Topic]:
    return {topic.id: topic for topic in session.scalars(select(Topic))}

"""Signup form services and the rate-limit helpers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FrozenClock
from nurture.consent.ledger import ConsentError
from nurture.consent.models import ConsentText, SignupAttempt, SignupForm, TopicKind
from nurture.consent.signup_forms import (
    RateLimited,
    create_form,
    embed_snippet,
    form_topics,
    get_form_by_public_id,
    ip_key,
    limit_ip,
    list_forms,
    paragraphs,
    purge_attempts,
)
from tests.factories import make_topic

TEXT = (
    "Ja, ich möchte den Newsletter erhalten.\nAbmeldung jederzeit.\n\nDatenschutz: siehe Website."
)


def _form(session: Session, clock: FrozenClock, **kwargs: object) -> SignupForm:
    values: dict[str, object] = {
        "name": "Footer DE",
        "topics": [make_topic(session, clock, "news"), make_topic(session, clock, "offers")],
        "text": TEXT,
        "language": "de",
        "ask_tracking": False,
        "now": clock.now(),
    }
    return create_form(session, **(values | kwargs))  # type: ignore[arg-type]


def test_a_form_gets_a_random_public_id_and_its_text_version(
    session: Session, clock: FrozenClock
) -> None:
    form = _form(session, clock)
    other = _form(session, clock, name="Shop EN", language="en", text="Yes, please.")
    assert len(form.public_id) == 16 and form.public_id != other.public_id
    text = session.get(ConsentText, form.text_id)
    assert text is not None and (text.text, text.language) == (TEXT, "de")
    assert [t.slug for t in form_topics(session, form)] == ["news", "offers"]
    assert [f.name for f in list_forms(session)] == ["Footer DE", "Shop EN"]
    assert get_form_by_public_id(session, form.public_id) is form
    assert get_form_by_public_id(session, "x" * 40) is None
    form.active = False
    assert get_form_by_public_id(session, form.public_id) is None


def test_a_form_is_refused_without_name_topics_or_text(
    session: Session, clock: FrozenClock
) -> None:
    tracking = make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    with pytest.raises(ConsentError, match="name"):
        _form(session, clock, name="  ")
    with pytest.raises(ConsentError, match="at least one topic"):
        _form(session, clock, topics=[])
    with pytest.raises(ConsentError, match="only marketing topics"):
        _form(session, clock, topics=[tracking])
    with pytest.raises(ConsentError, match="consent text"):
        _form(session, clock, text=" ")
    with pytest.raises(ConsentError, match="German or English"):
        _form(session, clock, language="fr")


def test_tracking_can_be_asked_only_when_a_tracking_topic_exists(
    session: Session, clock: FrozenClock
) -> None:
    with pytest.raises(ConsentError, match="tracking"):
        _form(session, clock, ask_tracking=True)
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    assert _form(session, clock, ask_tracking=True).ask_tracking is True


def test_the_embed_snippet_posts_every_field_to_the_hosted_page(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    make_topic(session, clock, "tracking", kind=TopicKind.TRACKING)
    form = _form(session, clock, ask_tracking=True)
    with app.test_request_context():
        snippet = embed_snippet(form, "https://nurture.test/")
    assert snippet.startswith(
        f'<form class="nurture-signup" method="post" action="https://nurture.test/s/{form.public_id}"'
    )
    for name in ('name="email"', 'name="first_name"', 'name="last_name"', 'name="gender"'):
        assert name in snippet
    assert 'name="topics" value="news"' in snippet and 'name="topics" value="offers"' in snippet
    assert 'name="tracking" value="1"' in snippet
    # The honeypot hides itself without our stylesheet, which a foreign page does not load.
    assert 'style="position:absolute;left:-10000px' in snippet and 'name="website"' in snippet
    # The consent text verbatim, line breaks kept; labels in the form's language (German).
    assert "Ja, ich möchte den Newsletter erhalten.<br>Abmeldung jederzeit.</p>" in snippet
    assert "<p>Datenschutz: siehe Website.</p>" in snippet
    assert "csrf" not in snippet and 'name="ts"' not in snippet


def test_paragraphs_keep_line_breaks_and_blank_lines() -> None:
    assert paragraphs("a\r\nb\n\n\nc\n\n") == [["a", "b"], ["c"]]


def test_the_ip_limit_counts_keyed_hashes_and_names_the_wait(
    session: Session, clock: FrozenClock
) -> None:
    secret = "s" * 40
    for _ in range(3):
        limit_ip(session, secret=secret, ip="203.0.113.7", limit=3, now=clock.now())
        clock.advance(minutes=10)
    with pytest.raises(RateLimited) as caught:
        limit_ip(session, secret=secret, ip="203.0.113.7", limit=3, now=clock.now())
    # The first hit was 30 minutes ago: it leaves the one-hour window in 30 minutes.
    assert caught.value.retry_after == 30 * 60
    # Another address is not affected, and no raw IP is stored.
    limit_ip(session, secret=secret, ip="203.0.113.8", limit=3, now=clock.now())
    keys = session.scalars(select(SignupAttempt.key)).all()
    assert all(k.startswith("ip:") and "203.0" not in k for k in keys)
    assert ip_key(secret, "203.0.113.7") in keys and ip_key("t" * 40, "203.0.113.7") not in keys
    clock.advance(minutes=30)
    limit_ip(session, secret=secret, ip="203.0.113.7", limit=3, now=clock.now())


def test_old_attempts_are_purged(session: Session, clock: FrozenClock) -> None:
    limit_ip(session, secret="s" * 40, ip="203.0.113.7", limit=5, now=clock.now())
    clock.advance(hours=23)
    limit_ip(session, secret="s" * 40, ip="203.0.113.7", limit=5, now=clock.now())
    clock.advance(timedelta(hours=2))
    assert purge_attempts(session, now=clock.now()) == 1
    assert len(session.scalars(select(SignupAttempt)).all()) == 1

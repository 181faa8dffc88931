import re
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.config import Settings
from nurture.mail import outbox
from nurture.mail import templates as templates_service
from nurture.mail.models import (
    CapturedMail,
    EmailTemplate,
    Message,
    MessageState,
    Purpose,
    TemplateVersion,
)
from nurture.mail.render import TemplateError
from nurture.mail.templates import TemplateDraft, preview
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_user

LEASE = timedelta(minutes=5)
HTML = "<p>{{ salutation }},</p><p>Hallo {{ contact.first_name }}, wir vermissen Sie.</p>"
SUBJECT = "Wir vermissen Sie, {{ contact.first_name }}"
STRICT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
)


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def _template_form(client: FlaskClient, url: str, **fields: str):  # type: ignore[no-untyped-def]
    token = csrf_token(client.get(url).get_data(as_text=True))
    data = {
        "name": "Win-back Herbst",
        "description": "Erste Mail nach 90 Tagen",
        "subject": SUBJECT,
        "html": HTML,
        "text": "",
        "css": "",
        "layout": "default",
        "action": "save",
        "csrf_token": token,
    }
    return client.post(url, data=data | fields)


def _create(client: FlaskClient, **fields: str) -> int:
    response = _template_form(client, "/templates/new", **fields)
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.fullmatch(r"/templates/(\d+)", response.headers["Location"])
    assert match
    return int(match.group(1))


def _versions(session: Session, template_id: int) -> list[TemplateVersion]:
    session.expire_all()
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.number)
        )
    )


def _enqueue(session: Session, clock: FrozenClock, key: str, to_addr: str) -> Message:
    message = outbox.enqueue(
        session,
        key=key,
        purpose=Purpose.MARKETING,
        to_addr=to_addr,
        context={"contact": {"first_name": "Anna"}},
        builtin="optin_confirmation",
        now=clock.now(),
    )
    assert message is not None
    session.commit()
    return message


def _make_uncertain(session: Session, clock: FrozenClock, to_addr: str) -> int:
    """A message whose worker died mid-send: claimed, sending, lease expired, recovered."""
    message_id = _enqueue(session, clock, f"k:{to_addr}", to_addr).id
    [claimed] = outbox.claim_batch(session, worker_id="w1", now=clock.now(), limit=1, lease=LEASE)
    assert claimed == message_id
    assert outbox.start_sending(session, message_id, worker_id="w1", now=clock.now(), lease=LEASE)
    session.commit()
    clock.advance(LEASE + timedelta(seconds=1))
    assert outbox.recover_expired(session, now=clock.now()) == 1
    session.commit()
    return message_id


def _state(session: Session, message_id: int) -> MessageState:
    session.expire_all()
    message = session.get(Message, message_id)
    assert message is not None
    return message.state


# -- templates -----------------------------------------------------------------------------------


def test_marketer_creates_a_template_through_the_form(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    template = session.get(EmailTemplate, template_id)
    assert template is not None
    assert (template.name, template.description) == ("Win-back Herbst", "Erste Mail nach 90 Tagen")
    [version] = _versions(session, template_id)
    assert (version.number, version.subject, version.html) == (1, SUBJECT, HTML)
    assert version.text is None and version.layout == "default"
    assert version.created_by_id == user.id
    page = client.get(f"/templates/{template_id}").get_data(as_text=True)
    assert "Template Win-back Herbst created as version 1." in page


def test_editing_adds_a_version_and_the_list_shows_it(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    url = f"/templates/{template_id}"
    clock.advance(timedelta(hours=1))
    saved = _template_form(client, url, subject="Neu: {{ contact.first_name }}, kommen Sie zurück")
    assert saved.status_code == 302
    assert [v.number for v in _versions(session, template_id)] == [1, 2]
    assert _versions(session, template_id)[1].subject.startswith("Neu:")
    assert "Saved as version 2." in client.get(url).get_data(as_text=True)

    listing = client.get("/templates").get_data(as_text=True)
    row = re.search(r"Win-back Herbst</a>.*?</tr>", listing, re.S)
    assert row
    assert "v2" in row.group(0) and "Neu: {{ contact.first_name }}" in row.group(0)

    # Saving the same content again keeps version 2.
    again = _template_form(client, url, subject="Neu: {{ contact.first_name }}, kommen Sie zurück")
    assert again.status_code == 302
    assert len(_versions(session, template_id)) == 2
    assert "Nothing changed; still version 2." in client.get(url).get_data(as_text=True)


@pytest.mark.parametrize(
    ("html", "words"),
    [
        ("<p>{{ ''.__class__ }}</p>", "internal attributes (__class__)"),
        ("<p>{{ config }}</p>", "{{ config }} on line 1, which is not available"),
    ],
)
def test_unsafe_templates_are_refused_with_the_renderers_message(
    client: FlaskClient, session, clock, settings: Settings, html: str, words: str
) -> None:
    _as(client, session, clock, Role.MARKETER)
    with pytest.raises(TemplateError) as refused:
        preview(TemplateDraft(subject="Hallo", html=html), imprint=settings.sender_imprint)
    response = _template_form(client, "/templates/new", subject="Hallo", html=html)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert str(escape(str(refused.value))) in page
    assert str(escape(words)) in page
    # The HTML field itself is marked, with the message next to it.
    assert re.search(
        r'<textarea aria-describedby="html-hint html-errors" aria-invalid="true"', page
    )
    assert session.scalar(select(func.count()).select_from(EmailTemplate)) == 0
    assert session.scalar(select(func.count()).select_from(TemplateVersion)) == 0


def test_undefined_variables_are_refused_by_name(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    unknown = _template_form(client, "/templates/new", html="<p>{{ first_name }}</p>")
    assert unknown.status_code == 422
    assert "{{ first_name }} on line 1, which is not available" in unknown.get_data(as_text=True)
    missing = _template_form(client, "/templates/new", html="<p>\n{{ contact.nickname }}</p>")
    assert missing.status_code == 422
    assert "{{ contact.nickname }} on line 2, which has no value here" in missing.get_data(
        as_text=True
    )
    assert session.scalar(select(func.count()).select_from(EmailTemplate)) == 0


def test_an_edit_that_does_not_render_keeps_the_saved_version(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    response = _template_form(client, f"/templates/{template_id}", html="<p>{{ config }}</p>")
    assert response.status_code == 422
    assert "The template was not saved." in response.get_data(as_text=True)
    assert [v.number for v in _versions(session, template_id)] == [1]


def test_saved_version_preview_is_isolated_and_in_both_languages(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    de = client.get(f"/templates/{template_id}/versions/1/preview.html?lang=de")
    assert de.status_code == 200
    assert de.headers["Content-Security-Policy"] == STRICT_CSP
    assert de.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert de.mimetype == "text/html"
    body = de.get_data(as_text=True)
    assert "Hallo Anna" in body and "Sehr geehrte Frau Dr. Müller" in body
    en = client.get(f"/templates/{template_id}/versions/1/preview.html?lang=en")
    assert "Dear Dr Müller" in en.get_data(as_text=True)
    assert client.get(f"/templates/{template_id}/versions/9/preview.html").status_code == 404

    # The editor frames both languages, sandboxed without scripts.
    page = client.get(f"/templates/{template_id}").get_data(as_text=True)
    frames = re.findall(r"<iframe[^>]*>", page)
    assert len(frames) == 2
    assert all('sandbox=""' in f and "allow-scripts" not in f for f in frames)
    assert "preview.html?lang=de" in frames[0] and "preview.html?lang=en" in frames[1]
    assert "Wir vermissen Sie, Anna" in page


def test_draft_preview_renders_without_saving(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    response = _template_form(
        client, "/templates/new", action="preview", html='<p>Hallo {{ contact.first_name }}"</p>'
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(EmailTemplate)) == 0
    frames = re.findall(r"<iframe[^>]*>", page)
    assert len(frames) == 2
    for frame in frames:
        assert 'sandbox=""' in frame and "allow-scripts" not in frame
        # The rendered HTML travels as an escaped attribute value: it cannot close the tag.
        assert "srcdoc=" in frame and "Hallo Anna&#34;" in frame and "<p>" not in frame
    assert "Wir vermissen Sie, Anna" in page
    assert re.search(r'<pre class="mail-text">[^<]*Hallo Anna', page)

    broken = _template_form(client, "/templates/new", action="preview", html="<p>{{ oops }}</p>")
    assert broken.status_code == 422
    assert "The preview could not be rendered." in broken.get_data(as_text=True)
    assert "{{ oops }} on line 1" in broken.get_data(as_text=True)


def test_a_test_mail_is_queued_to_the_given_address(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    page = client.get(f"/templates/{template_id}").get_data(as_text=True)
    assert f'value="{user.email}"' in page  # the default recipient is the user
    token = csrf_token(page)
    response = client.post(
        f"/templates/{template_id}/test",
        data={"to": "pruefer@kunde.example", "csrf_token": token},
        follow_redirects=True,
    )
    assert (
        "Test mail queued to pruefer@kunde.example; the worker sends it within seconds."
        in response.get_data(as_text=True)
    )
    [message] = session.scalars(select(Message)).all()
    [version] = _versions(session, template_id)
    assert message.purpose == Purpose.TEST
    assert message.to_addr == "pruefer@kunde.example"
    assert message.state == MessageState.QUEUED
    assert message.template_version_id == version.id

    bad = client.post(
        f"/templates/{template_id}/test", data={"to": "not an address", "csrf_token": token}
    )
    assert bad.status_code == 422
    assert "Enter a valid email address." in bad.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Message)) == 1


@pytest.mark.parametrize("path", ["/templates", "/templates/new", "/outbox", "/mailbox"])
def test_sales_sees_no_mail_pages(client: FlaskClient, session, clock, path: str) -> None:
    _as(client, session, clock, Role.SALES)
    assert client.get(path).status_code == 403
    nav = client.get("/").get_data(as_text=True)
    assert 'href="/templates"' not in nav and 'href="/outbox"' not in nav


def test_marketers_see_the_mail_pages_in_the_navigation(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    nav = client.get("/").get_data(as_text=True)
    for path in ("/templates", "/outbox", "/mailbox"):
        assert f'href="{path}"' in nav


# -- outbox --------------------------------------------------------------------------------------


def test_outbox_filters_by_state(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.ADMIN)
    _make_uncertain(session, clock, "maybe@kunde.example")  # first: the claim takes the oldest
    _enqueue(session, clock, "q1", "queued-one@kunde.example")
    _enqueue(session, clock, "q2", "queued-two@kunde.example")

    everything = client.get("/outbox").get_data(as_text=True)
    assert all(
        a in everything
        for a in ("queued-one@kunde.example", "queued-two@kunde.example", "maybe@kunde.example")
    )
    assert "The worker stopped while sending these." in everything

    uncertain = client.get("/outbox?state=uncertain").get_data(as_text=True)
    assert "maybe@kunde.example" in uncertain
    assert "queued-one@kunde.example" not in uncertain
    assert re.search(r'<tr class="[^"]*row-uncertain', uncertain)

    queued = client.get("/outbox?state=queued").get_data(as_text=True)
    assert "maybe@kunde.example" not in queued and "queued-two@kunde.example" in queued

    search = client.get("/outbox?q=QUEUED-T").get_data(as_text=True)
    assert "queued-two@kunde.example" in search and "queued-one@kunde.example" not in search


def test_outbox_pages_by_id(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    for i in range(53):
        _enqueue(session, clock, f"page:{i}", f"p{i:02d}@kunde.example")
    first = client.get("/outbox").get_data(as_text=True)
    assert first.count('href="/outbox/') == 50
    assert "p52@kunde.example" in first and "p02@kunde.example" not in first
    older = re.search(r'href="(/outbox\?before=\d+)"', first)
    assert older
    second = client.get(older.group(1)).get_data(as_text=True)
    assert second.count('href="/outbox/') == 3
    assert "p02@kunde.example" in second and "p03@kunde.example" not in second
    assert "?before=" not in second.split("Newest")[-1]  # no further "Older" link


def test_an_uncertain_message_can_be_resent(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    message_id = _make_uncertain(session, clock, "maybe@kunde.example")
    page = client.get(f"/outbox/{message_id}").get_data(as_text=True)
    assert f'action="/outbox/{message_id}/resend"' in page
    assert f'action="/outbox/{message_id}/drop"' in page
    assert "worker stopped while sending" in page  # the reason, and the timeline below
    token = csrf_token(page)

    response = client.post(
        f"/outbox/{message_id}/resend", data={"csrf_token": token}, follow_redirects=True
    )
    assert f"Message {message_id} queued again." in response.get_data(as_text=True)
    assert _state(session, message_id) == MessageState.QUEUED
    after = client.get(f"/outbox/{message_id}").get_data(as_text=True)
    assert "/resend" not in after and "Resend requested" in after
    assert user.email in after  # the timeline says who decided

    # A second decision changes nothing: the row is no longer uncertain.
    again = client.post(
        f"/outbox/{message_id}/drop", data={"csrf_token": token}, follow_redirects=True
    )
    assert "no longer uncertain" in again.get_data(as_text=True)
    assert _state(session, message_id) == MessageState.QUEUED


def test_an_uncertain_message_can_be_dropped(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.ADMIN)
    message_id = _make_uncertain(session, clock, "maybe@kunde.example")
    token = csrf_token(client.get(f"/outbox/{message_id}").get_data(as_text=True))
    assert client.post(f"/outbox/{message_id}/drop", data={"csrf_token": token}).status_code == 302
    assert _state(session, message_id) == MessageState.CANCELLED
    assert client.post("/outbox/999999/drop", data={"csrf_token": token}).status_code == 404


# -- mailbox -------------------------------------------------------------------------------------


def _capture(session: Session, clock: FrozenClock, message_id: int | None = None) -> CapturedMail:
    mail = EmailMessage()
    mail["From"] = "nurture <news@nurture.example>"
    mail["To"] = "Anna Müller <anna@kunde.example>"
    mail["Subject"] = "Wir vermissen Sie, Anna"
    mail["Date"] = format_datetime(clock.now())
    mail.set_content("Hallo Anna,\nwir vermissen Sie.\n")
    mail.add_alternative(
        '<p style="color: #b91c1c">Hallo <b>Anna</b></p><script>alert(1)</script>',
        subtype="html",
    )
    captured = CapturedMail(
        message_id=message_id,
        envelope_from="bounce@nurture.example",
        recipients=["anna@kunde.example"],
        subject="Wir vermissen Sie, Anna",
        raw=bytes(mail),
        captured_at=clock.now(),
    )
    session.add(captured)
    session.commit()
    return captured


def test_mailbox_shows_a_captured_mail(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    captured = _capture(session, clock)
    listing = client.get("/mailbox").get_data(as_text=True)
    assert f'href="/mailbox/{captured.id}"' in listing
    assert "Wir vermissen Sie, Anna" in listing and "anna@kunde.example" in listing

    page = client.get(f"/mailbox/{captured.id}").get_data(as_text=True)
    assert '<h1 id="mail-subject">Wir vermissen Sie, Anna</h1>' in page
    assert re.search(r'<pre class="mail-text"[^>]*>Hallo Anna,\nwir vermissen Sie.', page)
    assert "Anna Müller &lt;anna@kunde.example&gt;" in page  # a header, escaped
    assert re.search(rf'<iframe[^>]*sandbox=""[^>]*src="/mailbox/{captured.id}/html"', page)

    html = client.get(f"/mailbox/{captured.id}/html")
    assert html.headers["Content-Security-Policy"] == STRICT_CSP
    assert html.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "Hallo <b>Anna</b>" in html.get_data(as_text=True)

    raw = client.get(f"/mailbox/{captured.id}/raw")
    assert raw.status_code == 200
    assert raw.data == captured.raw
    assert raw.mimetype == "text/plain"
    assert raw.headers["Content-Disposition"] == f"attachment; filename=message-{captured.id}.eml"
    assert client.get("/mailbox/999999").status_code == 404


def test_outbox_detail_shows_the_captured_copy(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    message = _enqueue(session, clock, "with-copy", "anna@kunde.example")
    captured = _capture(session, clock, message_id=message.id)
    page = client.get(f"/outbox/{message.id}").get_data(as_text=True)
    assert f'href="/mailbox/{captured.id}/raw"' in page
    assert re.search(r'<pre class="mail-text"[^>]*>Hallo Anna,', page)
    assert "Queued" in page  # the timeline
    assert "/resend" not in page  # queued, not uncertain: no decision to make


def test_template_errors_are_shown_in_german(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    de = {"Accept-Language": "de"}
    token = csrf_token(client.get("/templates/new", headers=de).get_data(as_text=True))
    response = client.post(
        "/templates/new",
        headers=de,
        data={
            "name": "Rückgewinnung",
            "subject": "Hallo",
            "html": "<p>{{ config }}</p>",
            "layout": "default",
            "csrf_token": token,
        },
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Die Vorlage wurde nicht gespeichert." in page
    assert "Die Vorlage verwendet {{ config }} in Zeile 1" in page


def test_a_save_that_loses_a_race_is_refused_not_crashed(
    client: FlaskClient, session, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as(client, session, clock, Role.MARKETER)
    template_id = _create(client)
    assert _template_form(client, f"/templates/{template_id}", subject="Zweite").status_code == 302
    first = _versions(session, template_id)[0]
    # As if another marketer's version 2 landed between reading the latest and inserting.
    monkeypatch.setattr(templates_service, "latest_version", lambda _session, _id: first)
    response = _template_form(client, f"/templates/{template_id}", subject="Dritte")
    assert response.status_code == 422
    assert "Someone else saved this at the same moment." in response.get_data(as_text=True)
    assert [v.subject for v in _versions(session, template_id)] == [SUBJECT, "Zweite"]

"""Settings → Custom fields: admins list, add, edit and delete fields; nobody else gets in."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts.custom_fields import create_field, definitions
from nurture.contacts.models import CustomField
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_contact, make_user

URL = "/settings/custom-fields"


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    user = make_user(session, clock, role=role)
    assert login(client, user.email, PASSWORD).status_code == 302
    return user


def _stufe(session: Session, clock: FrozenClock) -> CustomField:
    field = create_field(
        session,
        key="stufe",
        label="Kundenstufe",
        kind="choice",
        choices=["Gold", "Silber"],
        now=clock.now(),
    )
    session.commit()
    return field


def _post(client: FlaskClient, url: str, page: str | None = None, **data: str):  # type: ignore[no-untyped-def]
    token = csrf_token(page if page is not None else client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def _stored(session: Session) -> dict[str, tuple[str, str, list[str]]]:
    session.expire_all()
    return {k: (f.label, f.kind, f.choices) for k, f in definitions(session).items()}


def test_only_admins_reach_the_pages(app: Flask, session: Session, clock: FrozenClock) -> None:
    field = _stufe(session, clock)
    assert app.test_client().get(URL).status_code == 302  # to the login page
    for role in (Role.MARKETER, Role.SALES):
        client = app.test_client()
        _as(client, session, clock, role)
        dashboard = client.get("/").get_data(as_text=True)
        for url in (URL, f"{URL}/{field.id}", f"{URL}/{field.id}/delete"):
            assert client.get(url).status_code == 403
            refused = _post(client, url, page=dashboard, key="x", label="x", kind="text")
            assert refused.status_code == 403
    assert _stored(session) == {"stufe": ("Kundenstufe", "choice", ["Gold", "Silber"])}


def test_page_lists_fields_with_type_choices_and_usage(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    empty = client.get(URL)
    assert empty.status_code == 200
    assert "No custom fields yet." in empty.get_data(as_text=True)

    _stufe(session, clock)
    create_field(session, key="umsatz", label="Umsatz", kind="number", choices=[], now=clock.now())
    session.commit()
    make_contact(session, clock, custom={"stufe": "gold", "umsatz": "1,5"})
    make_contact(session, clock, custom={"stufe": "Silber"})
    session.commit()

    html = client.get(URL).get_data(as_text=True)
    rows = re.findall(r'<tr id="custom-field-(\w+)">(.*?)</tr>', html, re.S)
    assert [key for key, _row in rows] == ["stufe", "umsatz"]
    stufe, umsatz = (re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for _k, row in rows)
    assert stufe.startswith("Kundenstufe stufe Choice Gold Silber 2 Edit Delete")
    assert umsatz.startswith("Umsatz umsatz Number – 1 Edit Delete")
    # The form offers the four types, translated labels with stable values.
    assert re.findall(r'<option[^>]*value="(\w+)"', html) == ["text", "number", "date", "choice"]


def test_admin_adds_a_choice_field(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    no_token = client.post(URL, data={"key": "stufe", "label": "Stufe", "kind": "text"})
    assert no_token.status_code == 400
    assert _stored(session) == {}
    response = _post(
        client,
        URL,
        key="stufe",
        label=" Kunden  stufe ",
        kind="choice",
        choices="Gold\r\n\r\n silber \r\nGOLD\r\nBronze",
    )
    assert response.status_code == 302 and response.headers["Location"] == URL
    assert _stored(session) == {"stufe": ("Kunden stufe", "choice", ["Gold", "silber", "Bronze"])}
    page = client.get(URL).get_data(as_text=True)
    assert "Custom field Kunden stufe (stufe) added." in page

    text = _post(client, URL, key="notiz", label="Notiz", kind="text", choices="ignored")
    assert text.status_code == 302
    assert _stored(session)["notiz"] == ("Notiz", "text", [])


def test_add_form_shows_service_errors_at_the_field(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _stufe(session, clock)
    _as(client, session, clock, Role.ADMIN)
    cases = [
        ({"key": "Stufe", "kind": "text"}, "key", "The key must start with a lower-case letter"),
        (
            {"key": "stufe", "kind": "text"},
            "key",
            "A custom field with the key stufe already exists.",
        ),
        ({"key": "neu", "kind": "choice", "choices": " \r\n"}, "choices", "needs at least one"),
    ]
    for data, name, message in cases:
        response = _post(client, URL, **({"label": "Neu"} | data))
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        errors = re.search(rf'<ul class="field-errors" id="{name}-errors">(.*?)</ul>', html, re.S)
        assert errors and message in errors.group(1), html
        assert 'role="alert"' in html
        # What was typed stays in the form.
        assert f'value="{data["key"]}"' in html
    missing = _post(client, URL, key="", label="", kind="text")
    assert missing.status_code == 422
    assert "This field is required." in missing.get_data(as_text=True)
    bogus = _post(client, URL, key="neu", label="Neu", kind="boolean")
    assert bogus.status_code == 422
    assert list(_stored(session)) == ["stufe"]


def test_edit_changes_label_and_choices_but_explains_key_and_type(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    field = _stufe(session, clock)
    _as(client, session, clock, Role.ADMIN)
    url = f"{URL}/{field.id}"
    page = client.get(url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "The key and the type never change" in html
    assert 'name="key"' not in html and 'name="kind"' not in html
    assert re.search(r'<textarea[^>]*name="choices"[^>]*>\s*Gold\nSilber</textarea>', html)

    response = _post(
        client,
        url,
        page=html,
        label="Stufe",
        choices="Gold\r\nSilber\r\nPlatin",
        key="hacked",
        kind="text",
    )
    assert response.status_code == 302 and response.headers["Location"] == URL
    assert _stored(session) == {"stufe": ("Stufe", "choice", ["Gold", "Silber", "Platin"])}
    assert "Custom field stufe saved." in client.get(URL).get_data(as_text=True)


def test_edit_refuses_removing_a_used_choice(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    field = _stufe(session, clock)
    make_contact(session, clock, custom={"stufe": "Silber"})
    session.commit()
    _as(client, session, clock, Role.ADMIN)
    url = f"{URL}/{field.id}"
    page = client.get(url).get_data(as_text=True)
    usage = re.search(r'<table class="table" id="choice-usage-table">(.*?)</table>', page, re.S)
    assert usage
    cells = re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", usage.group(1))
    assert cells[2:] == ["Gold", "0", "Silber", "1"]

    response = _post(client, url, page=page, label="Neue Stufe", choices="Gold")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    message = "The choice Silber is still used by contacts and cannot be removed."
    assert str(escape(message)) in html
    assert 'id="choices-errors"' in html
    # The heading shows what is stored, the form what was sent.
    assert "<h1>Edit custom field Kundenstufe</h1>" in html
    assert 'value="Neue Stufe"' in html
    assert _stored(session) == {"stufe": ("Kundenstufe", "choice", ["Gold", "Silber"])}


def test_edit_of_a_number_field_has_no_choices_and_unknown_ids_are_404(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    field = create_field(
        session, key="umsatz", label="Umsatz", kind="number", choices=[], now=clock.now()
    )
    session.commit()
    _as(client, session, clock, Role.ADMIN)
    html = client.get(f"{URL}/{field.id}").get_data(as_text=True)
    assert 'name="choices"' not in html and "Number" in html
    refused = _post(client, f"{URL}/{field.id}", page=html, label=" ")
    assert refused.status_code == 422
    assert _stored(session)["umsatz"][0] == "Umsatz"
    assert client.get(f"{URL}/999999").status_code == 404
    assert client.get(f"{URL}/999999/delete").status_code == 404


def test_delete_asks_first_then_deletes(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    field = _stufe(session, clock)
    _as(client, session, clock, Role.ADMIN)
    url = f"{URL}/{field.id}/delete"
    page = client.get(url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Really delete this field?" in html
    assert list(_stored(session)) == ["stufe"]  # looking is not deleting

    assert client.post(url).status_code == 400  # no CSRF token
    response = _post(client, url, page=html)
    assert response.status_code == 302 and response.headers["Location"] == URL
    assert _stored(session) == {}
    assert "Custom field stufe deleted." in client.get(URL).get_data(as_text=True)


def test_delete_is_refused_while_contacts_have_values(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    field = _stufe(session, clock)
    for _ in range(3):
        make_contact(session, clock, custom={"stufe": "Gold"})
    session.commit()
    _as(client, session, clock, Role.ADMIN)
    url = f"{URL}/{field.id}/delete"
    html = client.get(url).get_data(as_text=True)
    assert "so it cannot be deleted" in html
    assert "Delete field</button>" not in html  # no button that can only fail

    # Posted anyway (another tab, a value written meanwhile): the service's message, translated.
    response = _post(client, url, page=html)
    assert response.status_code == 422
    message = "Contacts with a value for stufe: 3. Clear the values before deleting the field."
    assert message in response.get_data(as_text=True)
    assert list(_stored(session)) == ["stufe"]

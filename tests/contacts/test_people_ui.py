import re
from html import unescape
from itertools import count

from flask.testing import FlaskClient
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from nurture.auth.models import Role, User
from nurture.clock import FrozenClock
from nurture.contacts.custom_fields import create_field
from nurture.contacts.models import Contact, Lifecycle
from nurture.events import Event, record_event
from nurture.mail import outbox
from nurture.mail.models import Purpose
from tests.conftest import csrf_token, login
from tests.factories import PASSWORD, make_contact, make_user

_seq = count(1)


def _as(client: FlaskClient, session: Session, clock: FrozenClock, role: Role) -> User:
    """A logged-in user. The session cookie is set directly: the login flow has its own tests,
    and an Argon2 hash per test would make this file slow."""
    user = User(
        email=f"{role.value}{next(_seq)}@nurture.example",
        name=f"{role.value.title()} Person",
        role=role,
        password_hash="-",
        created_at=clock.now(),
    )
    session.add(user)
    session.commit()
    with client.session_transaction() as cookie:
        cookie["_user_id"] = user.get_id()
        cookie["_fresh"] = True
    return user


def _text(response) -> str:  # type: ignore[no-untyped-def]
    return unescape(response.get_data(as_text=True))


def _rows(html: str) -> list[str]:
    """The email column of the contacts table, in order."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r'<td class="cell-wrap">([^<]+@[^<]+)</td>', body)


def _link(html: str, rel: str) -> str | None:
    match = re.search(rf'rel="{rel}" href="([^"]+)"', html)
    return unescape(match.group(1)) if match else None


def _no_inline_code(html: str) -> None:
    assert "style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "<style" not in html


def _bulk(session: Session, clock: FrozenClock, n: int, **fields: object) -> None:
    rows = [
        {
            "email": f"bulk{i:04d}@k.example",
            "last_name": f"Name{i % 17:02d}",
            "lifecycle": Lifecycle.LEAD,
            "tags": [],
            "custom": {},
            "created_at": clock.now(),
            "updated_at": clock.now(),
            **fields,
        }
        for i in range(n)
    ]
    session.execute(insert(Contact), rows)
    session.commit()


# -- list ------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login(client: FlaskClient, session, clock) -> None:
    contact = make_contact(session, clock)
    session.commit()
    for url in ("/contacts", f"/contacts/{contact.id}", "/contacts/new"):
        response = client.get(url)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"]


def test_sales_reads_and_searches_the_list(client: FlaskClient, session, clock) -> None:
    sales = make_user(session, clock, role=Role.SALES)
    make_contact(
        session,
        clock,
        email="jana@kunde.example",
        title="Dr.",
        first_name="Jana",
        last_name="Müller",
        company="Beta AG",
        city="Köln",
        lifecycle="customer",
        owner_id=sales.id,
        tags=["vip"],
    )
    make_contact(session, clock, email="mueller@other.example", last_name="Schulz")
    make_contact(session, clock, email="x@kunde.example", company="Müllerei")
    session.commit()
    assert login(client, sales.email, PASSWORD).status_code == 302

    page = _text(client.get("/contacts"))
    assert "3 contacts" in page
    row = re.search(r"Dr\. Jana Müller</a>.*?</tr>", page, re.S)
    assert row, page
    for cell in ("jana@kunde.example", "Beta AG", "Köln", "Customer", "Test User", "vip"):
        assert cell in row.group(0)
    # Sales reads, but is offered nothing that writes.
    assert "New contact" not in page and "/contacts/imports" not in page
    _no_inline_code(page)

    found = _text(client.get("/contacts?q=MÜL"))
    assert _rows(found) == ["x@kunde.example", "jana@kunde.example"]
    assert "2 contacts match" in found
    assert _rows(_text(client.get("/contacts?q=mueller@"))) == ["mueller@other.example"]
    assert _rows(_text(client.get("/contacts?q=beta"))) == ["jana@kunde.example"]


def test_filters_and_empty_states(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    empty = _text(client.get("/contacts"))
    assert "No contacts yet — import a CSV or add one." in empty
    assert 'href="/contacts/imports"' in empty and 'href="/contacts/new"' in empty
    assert 'href="/contacts/duplicates"' in empty

    owner = _as(client, session, clock, Role.SALES)
    _as(client, session, clock, Role.MARKETER)
    make_contact(session, clock, email="a@k.example", lifecycle="customer", owner_id=owner.id)
    make_contact(session, clock, email="b@k.example", lifecycle="lead", tags=["messe"])
    make_contact(session, clock, email="c@k.example", lifecycle="churned", tags=["messe"])
    session.commit()
    assert _rows(_text(client.get("/contacts?lifecycle=customer"))) == ["a@k.example"]
    assert _rows(_text(client.get(f"/contacts?owner={owner.id}"))) == ["a@k.example"]
    assert _rows(_text(client.get("/contacts?owner=none&sort=oldest"))) == [
        "b@k.example",
        "c@k.example",
    ]
    assert _rows(_text(client.get("/contacts?tag=Messe&lifecycle=churned"))) == ["c@k.example"]
    # Unknown values are ignored rather than refused, also ids no database column can hold.
    assert len(_rows(_text(client.get("/contacts?lifecycle=bogus&owner=x&sort=evil")))) == 3
    assert len(_rows(_text(client.get(f"/contacts?owner={10**30}&segment=²")))) == 3

    nothing = _text(client.get("/contacts?q=zzz"))
    assert "No contacts match these filters." in nothing
    assert _rows(nothing) == []
    gone = client.get("/contacts?segment=4711")
    assert gone.status_code == 200
    assert "The segment no longer exists." in _text(gone)


def test_list_pages_with_next_previous_and_first(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.SALES)
    _bulk(session, clock, 120)
    url = "/contacts?sort=last_name&q=name"
    pages = [_text(client.get(url))]
    assert _link(pages[0], "prev") is None
    while next_url := _link(pages[-1], "next"):
        assert "sort=last_name" in next_url and "q=name" in next_url
        pages.append(_text(client.get(next_url)))
    seen = [email for page in pages for email in _rows(page)]
    assert [len(_rows(page)) for page in pages] == [50, 50, 20]
    assert len(set(seen)) == 120
    assert "First" in pages[-1]

    previous = _link(pages[-1], "prev")
    assert previous
    assert _rows(_text(client.get(previous))) == _rows(pages[1])

    tampered = client.get("/contacts?sort=last_name&q=name&after=eyJoYWNrIjoxfQ&before=%%%")
    assert tampered.status_code == 200
    assert _rows(_text(tampered)) == _rows(pages[0])


def test_the_count_stops_at_a_thousand(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    _bulk(session, clock, 1001)
    assert "1,000+ contacts" in _text(client.get("/contacts"))
    assert "1.000+ Kontakte" in _text(client.get("/contacts", headers={"Accept-Language": "de"}))
    assert "1,000+ contacts match" in _text(client.get("/contacts?q=bulk"))


# -- detail ----------------------------------------------------------------------------------


def test_the_contact_page_shows_every_group(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.SALES)
    create_field(
        session, key="tier", label="Vertragsstufe", kind="choice", choices=["Gold"], now=clock.now()
    )
    create_field(session, key="seats", label="Lizenzen", kind="number", choices=[], now=clock.now())
    contact = make_contact(
        session,
        clock,
        email="anna@kunde.example",
        first_name="Anna",
        last_name="Müller",
        gender="Frau",
        title="Dr.",
        company="Beta AG",
        city="Köln",
        phone="+49 221 12345",
        website="https://beta.example/team",
        linkedin="javascript:alert(1)",
        tags=["vip", "messe"],
        owner_id=user.id,
        custom={"tier": "gold", "seats": 1250},
    )
    session.commit()
    page = _text(client.get(f"/contacts/{contact.id}"))
    assert "Sehr geehrte Frau Dr. Müller," in page
    for text in ("Beta AG", "Köln", "+49 221 12345", "Female (Ms)", "Formal (Sie)", "German"):
        assert text in page
    assert "<dt>Vertragsstufe</dt>" in page and "Gold" in page
    assert "<dt>Lizenzen</dt>" in page and "1,250" in page
    assert "<dt>Owner</dt><dd>Sales Person</dd>" in page
    assert '<a href="https://beta.example/team" rel="noopener noreferrer" target="_blank">' in page
    # Only http(s) addresses become links.
    assert 'href="javascript:' not in page and "javascript:alert(1)" in page
    assert 'href="mailto:anna@kunde.example"' in page
    # Sales may log a call but not edit the contact.
    assert f'action="/contacts/{contact.id}/activities"' in page
    assert f'href="/contacts/{contact.id}/edit"' not in page
    _no_inline_code(page)
    assert client.get("/contacts/999999").status_code == 404
    assert client.get(f"/contacts/{10**30}").status_code == 404
    assert client.get(f"/contacts/{contact.id}?before={10**30}&show=x").status_code == 200


def test_the_timeline_says_what_happened(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.MARKETER)
    contact = make_contact(session, clock, email="t@kunde.example")
    message = outbox.enqueue(
        session,
        key="win-back:1",
        purpose=Purpose.MARKETING,
        to_addr=contact.email,
        context={},
        builtin="optin_confirmation",
        now=clock.now(),
        contact_id=contact.id,
    )
    assert message is not None
    message.subject = "Wir vermissen Sie <3"
    facts = [
        ("sent", {"code": 250}),
        ("order", {"amount": "1234.50", "currency": "EUR", "order_id": "A-17"}),
        ("expected_revenue", {"amount": "500.00", "currency": "USD", "period": "2026-Q3"}),
        ("complaint", {"reason": "Lieferung zu spät", "severity": "high"}),
        ("cancellation", {"product": "Wartungsvertrag"}),
        ("call", {"text": "Rückruf vereinbart", "by": "vera@nurture.example"}),
        ("note", {"text": "Per API", "source": "api"}),
        ("contact_updated", {"fields": ["city", "phone", "custom.x"], "by": "eva@nurture.example"}),
        (
            "contact_merged",
            {
                "merged_contact_id": 99,
                "merged_email": "alt@kunde.example",
                "merged_name": "Anna Alt",
                "merged_by_email": "eva@nurture.example",
                "taken": {"city": "Köln", "custom.x": "1"},
            },
        ),
        ("consent_given", {"topic": "newsletter"}),
    ]
    for kind, payload in facts:
        clock.advance(minutes=1)
        record_event(
            session,
            kind,
            now=clock.now(),
            contact_id=contact.id,
            message_id=message.id if kind == "sent" else None,
            payload=payload,
        )
    session.commit()

    page = _text(client.get(f"/contacts/{contact.id}"))
    for words in (
        "Mail sent: “Wir vermissen Sie <3”",
        "Order A-17 of €1,234.50",
        "Expected revenue of $500.00 for 2026-Q3",
        "Complaint, severity high",
        "Lieferung zu spät",
        "Cancelled Wartungsvertrag",
        "Call logged by vera@nurture.example",
        "Rückruf vereinbart",
        "Note by the API",
        "Data changed by eva@nurture.example: City, Phone, custom.x",
        "Merged with Anna Alt (alt@kunde.example) by eva@nurture.example",
        "Taken from the merged contact: City, custom.x",
        "Contact created (source: test)",
        "Mail queued",
        "consent_given",
        "topic: <code>newsletter</code>",
    ):
        assert words in page, words
    # Data is escaped, never markup.
    raw = client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert "Wir vermissen Sie &lt;3" in raw and "<3" not in raw
    assert "UTC" in page
    german = _text(client.get(f"/contacts/{contact.id}", headers={"Accept-Language": "de"}))
    assert "1.234,50\xa0€" in german


def test_a_category_filter_and_older_pages(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.SALES)
    contact = make_contact(session, clock)
    record_event(
        session,
        "order",
        now=clock.now(),
        contact_id=contact.id,
        payload={"amount": "9.99", "currency": "EUR"},
    )
    for i in range(55):
        clock.advance(minutes=1)
        record_event(
            session, "note", now=clock.now(), contact_id=contact.id, payload={"text": f"Notiz {i}"}
        )
    session.commit()

    response = client.get(f"/contacts/{contact.id}?show=orders")
    assert 'aria-current="page">Orders & revenue' in response.get_data(as_text=True)
    orders = _text(response)
    assert "Order of €9.99" in orders
    assert "Notiz" not in orders and "Contact created" not in orders

    first = _text(client.get(f"/contacts/{contact.id}?show=conversations"))
    assert "Notiz 54" in first and "Notiz 5<" in first and "Notiz 4<" not in first
    older = _link(first, "next")
    assert older and "show=conversations" in older
    second = _text(client.get(older))
    assert "Notiz 4<" in second and "Notiz 0<" in second and "Notiz 5<" not in second
    assert "Order of" not in second
    assert _link(second, "next") is None
    everything = _text(client.get(f"/contacts/{contact.id}"))
    assert "Order of" not in everything  # the order is on the second page of everything
    assert "Order of €9.99" in _text(client.get(_link(everything, "next") or ""))


def test_logging_a_call_records_who_did_it(client: FlaskClient, session, clock) -> None:
    sales = _as(client, session, clock, Role.SALES)
    contact = make_contact(session, clock)
    session.commit()
    url = f"/contacts/{contact.id}"
    token = csrf_token(client.get(url).get_data(as_text=True))

    refused = client.post(
        f"{url}/activities", data={"kind": "call", "text": "  ", "csrf_token": token}
    )
    assert refused.status_code == 422
    assert "This field is required." in _text(refused)

    logged = client.post(
        f"{url}/activities",
        data={"kind": "call", "text": "Hat Interesse an Paket B", "csrf_token": token},
    )
    assert logged.status_code == 302
    event = session.scalar(select(Event).where(Event.type == "call"))
    assert event is not None and event.contact_id == contact.id
    assert event.payload == {
        "text": "Hat Interesse an Paket B",
        "by": sales.email,
        "source": f"user:{sales.id}",
    }
    page = _text(client.get(url))
    assert "Call logged." in page
    assert f"Call logged by {sales.email}" in page and "Hat Interesse an Paket B" in page


# -- edit and new ----------------------------------------------------------------------------


def _form(client: FlaskClient, url: str, **fields: str):  # type: ignore[no-untyped-def]
    """Submit the form at ``url`` with what it shows, changed by ``fields``."""
    html = client.get(url).get_data(as_text=True)
    data: dict[str, str] = {"csrf_token": csrf_token(html)}
    for name, value in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html):
        data.setdefault(name, unescape(value))
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        # WTForms writes the selected option as <option selected value="...">.
        chosen = re.search(r'<option selected value="([^"]*)"', options) or re.search(
            r'<option value="([^"]*)"', options
        )
        data[name] = unescape(chosen.group(1)) if chosen else ""
    return client.post(url, data=data | fields)


def test_edit_shows_each_problem_at_its_field_and_keeps_the_input(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.MARKETER)
    create_field(
        session, key="tier", label="Stufe", kind="choice", choices=["A", "B"], now=clock.now()
    )
    contact = make_contact(session, clock, email="alt@kunde.example", city="Bonn")
    session.commit()
    url = f"/contacts/{contact.id}/edit"
    response = _form(
        client, url, email="kein-at-zeichen", birthday="31.02.2020", city="Neustadt", cf_tier="Z"
    )
    assert response.status_code == 422
    page = _text(response)
    errors = dict(
        re.findall(r'<ul class="field-errors" id="([^"]+)-errors">\s*<li>([^<]+)</li>', page)
    )
    assert errors.keys() == {"email", "birthday", "cf_tier"}
    assert errors["email"] == "An email address must have an @-sign."
    assert errors["birthday"] == "must be a date as YYYY-MM-DD"
    assert errors["cf_tier"] == "'Z' is not one of: A, B"
    assert 'value="Neustadt"' in page and 'value="kein-at-zeichen"' in page
    assert "Nothing was saved." in page
    session.expire_all()
    assert session.get(Contact, contact.id).city == "Bonn"  # type: ignore[union-attr]


def test_edit_saves_clears_and_records_the_change(client: FlaskClient, session, clock) -> None:
    user = _as(client, session, clock, Role.MARKETER)
    create_field(session, key="tier", label="Stufe", kind="choice", choices=["A"], now=clock.now())
    contact = make_contact(
        session, clock, city="Bonn", company="Alt GmbH", tags=["a", "b"], custom={"tier": "A"}
    )
    other = make_contact(session, clock, email="taken@kunde.example")
    session.commit()
    url = f"/contacts/{contact.id}/edit"
    page = _text(client.get(url))
    assert 'value="a, b"' in page and '<option selected value="A">' in page

    clock.advance(hours=2)
    saved = _form(
        client,
        url,
        city="Köln",
        phone="0221 9",
        company="",
        tags="b, neu",
        cf_tier="",
        owner_id=str(user.id),
        lifecycle="at_risk",
    )
    assert saved.status_code == 302, _text(saved)
    session.expire_all()
    row = session.get(Contact, contact.id)
    assert row is not None
    assert (row.city, row.phone, row.company, row.tags) == ("Köln", "0221 9", "", ["b", "neu"])
    assert (row.custom, row.owner_id, row.lifecycle) == ({}, user.id, Lifecycle.AT_RISK)
    assert row.updated_at == clock.now()
    event = session.scalar(select(Event).where(Event.type == "contact_updated"))
    assert event is not None
    assert event.payload["fields"] == [
        "city",
        "company",
        "custom.tier",
        "lifecycle",
        "owner_id",
        "phone",
        "tags",
    ]
    assert event.payload["by_id"] == user.id
    detail = _text(client.get(f"/contacts/{contact.id}"))
    assert (
        f"Data changed by {user.email}: City, Company, Stufe, Lifecycle, Owner, Phone, Tags"
        in detail
    )
    assert "Saved. Changed:" in detail

    taken = _form(client, url, email=other.email)
    assert taken.status_code == 422
    assert "belongs to another contact" in _text(taken)


def test_new_creates_a_contact_and_never_overwrites_one(
    client: FlaskClient, session, clock
) -> None:
    _as(client, session, clock, Role.ADMIN)
    existing = make_contact(session, clock, email="da@kunde.example", city="Bonn")
    session.commit()
    before = session.scalar(select(func.count()).select_from(Contact))

    duplicate = _form(client, "/contacts/new", email="DA@Kunde.example", city="Köln")
    assert duplicate.status_code == 422
    page = _text(duplicate)
    assert "A contact with this email already exists" in page
    assert f'href="/contacts/{existing.id}"' in page
    assert 'value="Köln"' in page
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Contact)) == before
    assert session.get(Contact, existing.id).city == "Bonn"  # type: ignore[union-attr]

    created = _form(
        client,
        "/contacts/new",
        email="Neu@Kunde.example",
        last_name="Neumann",
        gender="male",
        tags="messe",
    )
    assert created.status_code == 302
    row = session.scalar(select(Contact).where(Contact.email == "neu@kunde.example"))
    assert row is not None
    assert (row.last_name, row.gender, row.tags, row.source) == (
        "Neumann",
        "male",
        ["messe"],
        "manual",
    )
    assert created.headers["Location"].endswith(f"/contacts/{row.id}")
    assert "Sehr geehrter Herr Neumann," in _text(client.get(f"/contacts/{row.id}"))


def test_sales_may_not_edit_or_create(client: FlaskClient, session, clock) -> None:
    _as(client, session, clock, Role.SALES)
    contact = make_contact(session, clock, city="Bonn")
    session.commit()
    token = csrf_token(client.get(f"/contacts/{contact.id}").get_data(as_text=True))
    for url in (f"/contacts/{contact.id}/edit", "/contacts/new"):
        assert client.get(url).status_code == 403
        posted = client.post(url, data={"csrf_token": token, "email": "x@k.example", "city": "X"})
        assert posted.status_code == 403
    session.expire_all()
    assert session.get(Contact, contact.id).city == "Bonn"  # type: ignore[union-attr]
    assert session.scalar(select(func.count()).select_from(Contact)) == 1

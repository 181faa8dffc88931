"""Custom fields: value rules, definition rules, and validation through the API and imports."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.cli import cli
from nurture.clock import FrozenClock
from nurture.contacts.custom_fields import (
    CustomFieldError,
    choice_usage,
    clean_custom,
    clean_value,
    create_field,
    definitions,
    delete_field,
    update_field,
    values_in_use,
    values_in_use_by_key,
)
from nurture.contacts.models import Contact, CustomField
from nurture.contacts.store import update_contact
from tests.contacts.test_api import _auth
from tests.factories import make_contact

KEY_RULE = (
    "The key must start with a lower-case letter and contain only a-z, 0-9 and _ "
    "(at most 40 characters)."
)


def _field(kind: str, choices: list[str] | None = None) -> CustomField:
    return CustomField(key=f"f_{kind}", label=kind.title(), kind=kind, choices=choices or [])


def _refused(field: CustomField, value: Any) -> str:
    with pytest.raises(ValueError) as caught:
        clean_value(field, value)
    return str(caught.value)


def _define(session: Session, clock: FrozenClock) -> None:
    """The fields most tests use: text, number, date and a choice."""
    for key, kind, choices in [
        ("branche_detail", "text", []),
        ("umsatz", "number", []),
        ("vertragsende", "date", []),
        ("stufe", "choice", ["Gold", "Silber", "Bronze"]),
    ]:
        create_field(
            session, key=key, label=key.title(), kind=kind, choices=choices, now=clock.now()
        )
    session.commit()


# -- clean_value -----------------------------------------------------------------------------


def test_empty_values_mean_remove_for_every_kind() -> None:
    for kind in ("text", "number", "date", "choice"):
        field = _field(kind, ["A"])
        assert clean_value(field, None) is None
        assert clean_value(field, "  ") is None


def test_text_is_collapsed_and_limited_to_500_characters() -> None:
    field = _field("text")
    assert clean_value(field, "  Maschinen\n  und   Anlagen ") == "Maschinen und Anlagen"
    assert clean_value(field, 42) == "42"
    assert clean_value(field, "x" * 500) == "x" * 500
    assert _refused(field, "x" * 501) == "must be at most 500 characters"
    assert _refused(field, True) == "must be text"
    assert _refused(field, ["a"]) == "must be text"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (3, 3),
        (2.5, 2.5),
        (2.0, 2),
        ("1.234,5", 1234.5),
        ("1234,5", 1234.5),
        ("-0,5", -0.5),
        ("1.234.567,00", 1234567),
        ("1,234.5", 1234.5),
        ("1,234,567", 1234567),
        ("1 234,5", 1234.5),
        ("1\u00a0234", 1234),
        ("19.90", 19.9),
        ("1e3", 1000),
        (999_999_999_999_999, 999_999_999_999_999),
    ],
)
def test_numbers_read_german_and_english_forms(raw: Any, stored: int | float) -> None:
    value = clean_value(_field("number"), raw)
    assert value == stored
    assert type(value) is type(stored)


def test_numbers_refuse_booleans_non_finite_ambiguous_and_huge_values() -> None:
    field = _field("number")
    assert _refused(field, True) == "must be a number"
    assert _refused(field, False) == "must be a number"
    assert _refused(field, [1]) == "must be a number"
    assert _refused(field, float("nan")) == "nan is not a number"
    assert _refused(field, float("inf")) == "inf is not a number"
    assert _refused(field, "NaN") == "'NaN' is not a number"
    assert _refused(field, "Infinity") == "'Infinity' is not a number"
    assert _refused(field, "-inf") == "'-inf' is not a number"
    assert _refused(field, "zwölf") == "'zwölf' is not a number"
    # Neither German nor English grouping: refused rather than guessed.
    assert _refused(field, "1,23,4") == "'1,23,4' is not a number"
    assert _refused(field, "1e400") == (
        "'1e400' is too large (at most 15 digits before the decimal point)"
    )
    assert _refused(field, 10**15) == (
        "1000000000000000 is too large (at most 15 digits before the decimal point)"
    )


def test_dates_read_iso_and_german_and_store_iso() -> None:
    field = _field("date")
    assert clean_value(field, "2026-03-01") == "2026-03-01"
    assert clean_value(field, "01.03.2026") == "2026-03-01"
    assert clean_value(field, "1.3.2026") == "2026-03-01"
    assert clean_value(field, date(2026, 3, 1)) == "2026-03-01"
    assert _refused(field, "31.02.2026") == (
        "'31.02.2026' is not a date as DD.MM.YYYY or YYYY-MM-DD"
    )
    assert _refused(field, "2026-02-30") == (
        "'2026-02-30' is not a date as DD.MM.YYYY or YYYY-MM-DD"
    )
    # fromisoformat would read these as dates; a number sent by mistake must not become one.
    assert _refused(field, 20260301) == "'20260301' is not a date as DD.MM.YYYY or YYYY-MM-DD"
    assert _refused(field, "2026-W09-1") == (
        "'2026-W09-1' is not a date as DD.MM.YYYY or YYYY-MM-DD"
    )
    assert _refused(field, datetime(2026, 3, 1, 12)) == "must be a date, not a time"


def test_choices_fold_case_to_the_defined_spelling() -> None:
    field = _field("choice", ["Gold", "Silber", "Premium Plus"])
    assert clean_value(field, "gold") == "Gold"
    assert clean_value(field, " premium   PLUS ") == "Premium Plus"
    assert _refused(field, "Platin") == "'Platin' is not one of: Gold, Silber, Premium Plus"
    assert _refused(field, True) == "must be one of: Gold, Silber, Premium Plus"
    assert _refused(field, {"x": 1}) == "must be one of: Gold, Silber, Premium Plus"


def test_clean_custom_names_each_bad_key() -> None:
    defs = {"umsatz": _field("number"), "stufe": _field("choice", ["Gold"])}
    clean, errors = clean_custom(defs, {"umsatz": "1,5", "stufe": "gold", "typo": "x"})
    assert clean == {"umsatz": 1.5, "stufe": "Gold"}
    assert errors == {"custom.typo": "is not a defined custom field"}
    assert clean_custom(defs, ["umsatz"]) == ({}, {"custom": "must be an object"})


# -- definitions -----------------------------------------------------------------------------


def _create_refused(session: Session, clock: FrozenClock, **fields: Any) -> CustomFieldError:
    args: dict[str, Any] = {"key": "stufe", "label": "Stufe", "kind": "text", "choices": []}
    with pytest.raises(CustomFieldError) as caught:
        create_field(session, **(args | fields), now=clock.now())
    return caught.value


def test_create_field_keeps_display_order_and_cleans_choices(
    session: Session, clock: FrozenClock
) -> None:
    first = create_field(
        session,
        key="umsatz",
        label=" Umsatz   2025 ",
        kind="number",
        choices=["x"],
        now=clock.now(),
    )
    second = create_field(
        session,
        key="stufe",
        label="Stufe",
        kind="choice",
        choices=[" Gold ", "", "gold", "Silber  Plus"],
        now=clock.now(),
    )
    session.commit()
    assert (first.label, first.choices, first.position) == ("Umsatz 2025", [], 1)
    assert (second.choices, second.position) == (["Gold", "Silber Plus"], 2)
    assert list(definitions(session)) == ["umsatz", "stufe"]


@pytest.mark.parametrize("key", ["Stufe", "1stufe", "_stufe", "stu-fe", "stufe ä", "s" * 41, ""])
def test_create_field_refuses_bad_keys(session: Session, clock: FrozenClock, key: str) -> None:
    error = _create_refused(session, clock, key=key)
    assert (str(error), error.field) == (KEY_RULE, "key")


def test_create_field_refuses_duplicate_keys_types_and_labels(
    session: Session, clock: FrozenClock
) -> None:
    create_field(session, key="stufe", label="Stufe", kind="text", choices=[], now=clock.now())
    session.commit()
    error = _create_refused(session, clock, label="Andere Stufe")
    assert (str(error), error.field) == ("A custom field with the key stufe already exists.", "key")
    assert error.message == "A custom field with the key %(key)s already exists."
    assert error.params == {"key": "stufe"}
    error = _create_refused(session, clock, key="neu", kind="boolean")
    assert (str(error), error.field) == ("Unknown field type boolean.", "kind")
    for label in ("   ", "x" * 101):
        error = _create_refused(session, clock, key="neu", label=label)
        assert (str(error), error.field) == ("The label must be 1 to 100 characters long.", "label")
    assert list(definitions(session)) == ["stufe"]


def test_choice_rules(session: Session, clock: FrozenClock) -> None:
    def refused(choices: list[str]) -> str:
        return str(_create_refused(session, clock, kind="choice", choices=choices))

    assert refused([]) == "A choice field needs at least one choice."
    assert refused(["  ", ""]) == "A choice field needs at least one choice."
    assert refused([f"c{i}" for i in range(101)]) == "A choice field can have at most 100 choices."
    assert refused(["x" * 101]) == "A choice can be at most 100 characters long."
    field = create_field(
        session,
        key="stufe",
        label="Stufe",
        kind="choice",
        choices=[f"c{i}" for i in range(100)],
        now=clock.now(),
    )
    assert len(field.choices) == 100


def test_update_field_refuses_removing_a_used_choice(session: Session, clock: FrozenClock) -> None:
    _define(session, clock)
    field = definitions(session)["stufe"]
    make_contact(session, clock, custom={"stufe": "gold"})
    make_contact(session, clock, custom={"stufe": "Gold"})
    make_contact(session, clock, custom={"stufe": "Silber"})
    session.commit()
    assert choice_usage(session, field) == {"Gold": 2, "Silber": 1, "Bronze": 0}

    with pytest.raises(CustomFieldError) as caught:
        update_field(session, field, label="Stufe", choices=["Bronze", "Platin"])
    # The first used choice in defined order, every time.
    assert str(caught.value) == "The choice Gold is still used by contacts and cannot be removed."
    assert caught.value.field == "choices"
    session.rollback()

    update_field(session, field, label="Kundenstufe", choices=["Gold", "Silber", "Platin"])
    session.commit()
    session.expire_all()
    stored = definitions(session)["stufe"]
    assert (stored.label, stored.choices) == ("Kundenstufe", ["Gold", "Silber", "Platin"])

    with pytest.raises(CustomFieldError) as caught:
        update_field(session, stored, label="", choices=stored.choices)
    assert str(caught.value) == "The label must be 1 to 100 characters long."


def test_update_field_ignores_choices_of_other_kinds(session: Session, clock: FrozenClock) -> None:
    _define(session, clock)
    field = definitions(session)["umsatz"]
    update_field(session, field, label="Umsatz", choices=["egal"])
    assert field.choices == []


def test_delete_field_refuses_while_values_exist(session: Session, clock: FrozenClock) -> None:
    _define(session, clock)
    contacts = [make_contact(session, clock, custom={"umsatz": n}) for n in (1, 2)]
    make_contact(session, clock, custom={"stufe": "Gold"})
    session.commit()
    field = definitions(session)["umsatz"]
    assert values_in_use(session, "umsatz") == 2
    assert values_in_use_by_key(session, ["umsatz", "stufe", "vertragsende"]) == {
        "umsatz": 2,
        "stufe": 1,
        "vertragsende": 0,
    }
    with pytest.raises(CustomFieldError) as caught:
        delete_field(session, field)
    assert str(caught.value) == (
        "Contacts with a value for umsatz: 2. Clear the values before deleting the field."
    )
    session.rollback()

    for contact in contacts:
        update_contact(session, contact, {"custom": {"umsatz": None}}, now=clock.now())
    session.commit()
    delete_field(session, definitions(session)["umsatz"])
    session.commit()
    assert "umsatz" not in definitions(session)


# -- through the API -------------------------------------------------------------------------


def _post(client: FlaskClient, auth: dict[str, str], custom: Any, email: str = "anna@example.com"):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/contacts", headers=auth, json={"email": email, "custom": custom})


def _custom(session: Session, email: str = "anna@example.com") -> dict[str, Any]:
    session.expire_all()
    return session.scalar(select(Contact.custom).where(Contact.email == email))  # type: ignore[return-value]


def test_api_refuses_bad_custom_values_with_a_422_naming_each_key(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _define(session, clock)
    auth = _auth(session, clock)
    response = _post(
        client,
        auth,
        {
            "typo": "x",
            "umsatz": "viel",
            "vertragsende": "31.02.2026",
            "stufe": "Platin",
            "branche_detail": True,
        },
    )
    assert response.status_code == 422
    assert response.json == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "details": {
                "custom.typo": "is not a defined custom field",
                "custom.umsatz": "'viel' is not a number",
                "custom.vertragsende": "'31.02.2026' is not a date as DD.MM.YYYY or YYYY-MM-DD",
                "custom.stufe": "'Platin' is not one of: Gold, Silber, Bronze",
                "custom.branche_detail": "must be text",
            },
        }
    }
    assert _post(client, auth, {"umsatz": True}).json["error"]["details"] == {  # type: ignore[index]
        "custom.umsatz": "must be a number"
    }
    assert _post(client, auth, "Gold").json["error"]["details"] == {  # type: ignore[index]
        "custom": "must be an object"
    }
    assert session.scalar(select(Contact.id)) is None


def test_api_stores_canonical_values_removes_null_and_merges_patches(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _define(session, clock)
    auth = _auth(session, clock)
    created = _post(
        client,
        auth,
        {
            "umsatz": "1.234,5",
            "vertragsende": "01.03.2026",
            "stufe": "gOLD",
            "branche_detail": " Werkzeug\tbau ",
        },
    )
    assert created.status_code == 201, created.json
    stored = {
        "umsatz": 1234.5,
        "vertragsende": "2026-03-01",
        "stufe": "Gold",
        "branche_detail": "Werkzeug bau",
    }
    assert created.json["custom"] == stored  # type: ignore[index]
    assert _custom(session) == stored
    contact_id = created.json["id"]  # type: ignore[index]

    patched = client.patch(
        f"/api/v1/contacts/{contact_id}", headers=auth, json={"custom": {"umsatz": 99}}
    )
    assert patched.status_code == 200
    assert _custom(session) == stored | {"umsatz": 99}

    # The upsert path merges too; null removes exactly the keys it names.
    again = _post(client, auth, {"branche_detail": None, "stufe": "silber"})
    assert again.status_code == 200
    assert _custom(session) == {"umsatz": 99, "vertragsende": "2026-03-01", "stufe": "Silber"}
    removed = client.patch(
        f"/api/v1/contacts/{contact_id}",
        headers=auth,
        json={"custom": {"umsatz": None, "vertragsende": ""}},
    )
    assert removed.json["custom"] == {"stufe": "Silber"}  # type: ignore[index]
    got = client.get(f"/api/v1/contacts/{contact_id}", headers=auth)
    assert got.json["custom"] == {"stufe": "Silber"}  # type: ignore[index]

    refused = client.patch(
        f"/api/v1/contacts/{contact_id}", headers=auth, json={"custom": {"stufe": "Platin"}}
    )
    assert refused.status_code == 422
    assert refused.json["error"]["details"] == {  # type: ignore[index]
        "custom.stufe": "'Platin' is not one of: Gold, Silber, Bronze"
    }
    assert _custom(session) == {"stufe": "Silber"}


def test_api_lists_custom_fields_for_every_role(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    _define(session, clock)
    response = client.get("/api/v1/custom-fields", headers=_auth(session, clock, Role.SALES))
    assert response.status_code == 200
    items = response.json["items"]  # type: ignore[index]
    assert [(i["key"], i["type"], i["choices"]) for i in items] == [
        ("branche_detail", "text", []),
        ("umsatz", "number", []),
        ("vertragsende", "date", []),
        ("stufe", "choice", ["Gold", "Silber", "Bronze"]),
    ]
    assert set(items[0]) == {"id", "key", "label", "type", "choices", "created_at"}
    assert client.get("/api/v1/custom-fields").status_code == 401


def test_api_creates_custom_fields_for_admins_only(
    client: FlaskClient, session: Session, clock: FrozenClock
) -> None:
    body = {
        "key": "stufe",
        "label": "Stufe",
        "type": "choice",
        "choices": ["Gold", "gold", "Silber"],
    }
    for role in (Role.MARKETER, Role.SALES):
        refused = client.post(
            "/api/v1/custom-fields", headers=_auth(session, clock, role), json=body
        )
        assert refused.status_code == 403
    assert definitions(session) == {}

    admin = _auth(session, clock, Role.ADMIN)
    created = client.post("/api/v1/custom-fields", headers=admin, json=body)
    assert created.status_code == 201
    assert {k: created.json[k] for k in ("key", "label", "type", "choices")} == {  # type: ignore[index]
        "key": "stufe",
        "label": "Stufe",
        "type": "choice",
        "choices": ["Gold", "Silber"],
    }
    session.expire_all()
    assert definitions(session)["stufe"].choices == ["Gold", "Silber"]

    duplicate = client.post("/api/v1/custom-fields", headers=admin, json=body)
    assert duplicate.status_code == 422
    assert duplicate.json == {
        "error": {
            "code": "validation_error",
            "message": "A custom field with the key stufe already exists.",
            "details": {"key": "A custom field with the key stufe already exists."},
        }
    }
    bad_type = client.post(
        "/api/v1/custom-fields", headers=admin, json=body | {"key": "neu", "type": "bool"}
    )
    assert bad_type.status_code == 422
    assert bad_type.json["error"]["details"] == {"type": "Unknown field type bool."}  # type: ignore[index]
    no_choices = client.post(
        "/api/v1/custom-fields", headers=admin, json=body | {"key": "neu", "choices": []}
    )
    assert no_choices.json["error"]["message"] == "A choice field needs at least one choice."  # type: ignore[index]
    wrong = client.post(
        "/api/v1/custom-fields",
        headers=admin,
        json={"key": 1, "type": "text", "choices": "Gold", "kind": "text"},
    )
    assert wrong.status_code == 422
    assert wrong.json["error"]["details"] == {  # type: ignore[index]
        "key": "must be a string",
        "label": "must be a string",
        "choices": "must be a list of strings",
        "kind": "is not a property of a custom field",
    }
    assert list(definitions(session)) == ["stufe"]


def test_openapi_documents_custom_fields_and_the_custom_object(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").json
    assert spec is not None
    assert set(spec["paths"]["/custom-fields"]) == {"get", "post"}
    schemas = spec["components"]["schemas"]
    custom = schemas["ContactInput"]["properties"]["custom"]
    assert custom["type"] == "object" and "GET /custom-fields" in custom["description"]
    assert schemas["CustomFieldInput"]["required"] == ["key", "label", "type"]


# -- through the CSV import ------------------------------------------------------------------


def test_cli_import_maps_columns_to_custom_fields(
    runner: CliRunner, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    _define(session, clock)
    source = tmp_path / "kunden.csv"
    source.write_text(
        "E-Mail;Umsatz;Vertragsende;Kundenstufe\r\n"
        "anna@example.com;1.234,5;01.03.2026;gold\r\n"
        "bernd@example.com;viel;31.02.2026;Platin\r\n",
        encoding="utf-8",
    )
    args = ["contacts", "import", str(source), "--map", "E-Mail=email"]
    args += ["--map", "Umsatz=custom.umsatz", "--map", "Vertragsende=custom.vertragsende"]
    args += ["--map", "Kundenstufe=custom.stufe"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "imported 1 rows: 1 created, 0 updated, 0 unchanged, 1 errors"
    # A bad row is reported with its line and the custom.<key> at fault; nothing of it is kept.
    assert lines[1] == "line 3: custom.umsatz: 'viel' is not a number"
    assert _custom(session) == {"umsatz": 1234.5, "vertragsende": "2026-03-01", "stufe": "Gold"}
    assert _custom(session, "bernd@example.com") is None

    unknown = runner.invoke(
        cli,
        ["contacts", "import", str(source), "--map", "E-Mail=email", "--map", "Umsatz=custom.typo"],
    )
    assert unknown.exit_code == 2
    assert "The mapping names custom.typo, which is not a contact field to import." in (
        unknown.output
    )

"""Segments: every operator of every type on both backends, nesting, validation, injection."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from nurture.auth.models import Role
from nurture.clock import FrozenClock
from nurture.consent import segment_conditions  # noqa: F401  (the app registers it; so do we)
from nurture.contacts import segments
from nurture.contacts.custom_fields import create_field, definitions
from nurture.contacts.models import Contact, Segment
from nurture.contacts.segments import (
    CompileContext,
    ConditionInvalid,
    Message,
    SegmentError,
    ValidationContext,
    compile_definition,
    count_matching,
    create_segment,
    delete_segment,
    list_matching,
    list_segments,
    register_condition,
    sample_matching,
    segment_query,
    update_segment,
    validate_definition,
)
from nurture.events import record_event
from tests.factories import make_contact, make_user


def _matching(session: Session, clock: FrozenClock, *conditions: Any, match: str = "all") -> set:
    definition = {"match": match, "conditions": list(conditions)}
    expr = compile_definition(definition, now=clock.now(), custom_fields=definitions(session))
    return set(session.scalars(select(Contact.email).where(expr)))


def _local(emails: set[str]) -> set[str]:
    return {email.split("@")[0] for email in emails}


def _check(session: Session, clock: FrozenClock, cases: list[tuple[dict, set[str]]]) -> None:
    for condition, expected in cases:
        assert _local(_matching(session, clock, condition)) == expected, condition


def _errors(definition: Any, custom_fields: Any = None) -> dict[str, str]:
    with pytest.raises(SegmentError) as caught:
        validate_definition(definition, custom_fields or {})
    return caught.value.errors


# -- operators by type ---------------------------------------------------------------------------


def test_text_operators_ignore_case_and_match_literally(session: Session, clock) -> None:
    make_contact(
        session,
        clock,
        email="anna@beispiel.de",
        last_name="Müller",
        city="Berlin",
        company="100% Bio_GmbH",
        customer_number="K-1",
    )
    make_contact(session, clock, email="bert@example.com", last_name="Mueller", city="berlin")
    make_contact(
        session, clock, email="carl@example.com", last_name="Schmidt", time_zone="Europe/Berlin"
    )
    session.commit()
    _check(
        session,
        clock,
        [
            ({"field": "city", "op": "eq", "value": "BERLIN"}, {"anna", "bert"}),
            ({"field": "city", "op": "neq", "value": "Berlin"}, {"carl"}),
            ({"field": "city", "op": "contains", "value": "erl"}, {"anna", "bert"}),
            ({"field": "city", "op": "starts_with", "value": "be"}, {"anna", "bert"}),
            ({"field": "city", "op": "is_empty"}, {"carl"}),
            ({"field": "city", "op": "is_not_empty"}, {"anna", "bert"}),
            ({"field": "last_name", "op": "starts_with", "value": "Mü"}, {"anna"}),
            ({"field": "last_name", "op": "starts_with", "value": "mu"}, {"bert"}),
            ({"field": "last_name", "op": "eq", "value": "  schmidt "}, {"carl"}),
            # LIKE wildcards in a value are plain characters.
            ({"field": "company", "op": "contains", "value": "0% b"}, {"anna"}),
            ({"field": "company", "op": "contains", "value": "%"}, {"anna"}),
            ({"field": "company", "op": "starts_with", "value": "_"}, set()),
            ({"field": "company", "op": "contains", "value": "o_G"}, {"anna"}),
            ({"field": "last_name", "op": "starts_with", "value": "M%"}, set()),
            # The email is stored lower-cased; the value is lower-cased to compare plainly.
            ({"field": "email", "op": "eq", "value": "Anna@Beispiel.DE"}, {"anna"}),
            ({"field": "email", "op": "neq", "value": "anna@beispiel.de"}, {"bert", "carl"}),
            ({"field": "email", "op": "starts_with", "value": "B"}, {"bert"}),
            ({"field": "email", "op": "contains", "value": "@EXAMPLE."}, {"bert", "carl"}),
            # Nullable columns: "not K-1" includes those without a customer number.
            ({"field": "customer_number", "op": "neq", "value": "k-1"}, {"bert", "carl"}),
            ({"field": "customer_number", "op": "is_empty"}, {"bert", "carl"}),
            ({"field": "customer_number", "op": "is_not_empty"}, {"anna"}),
            ({"field": "time_zone", "op": "is_not_empty"}, {"carl"}),
            ({"field": "time_zone", "op": "eq", "value": "europe/berlin"}, {"carl"}),
        ],
    )


def test_enum_operators(session: Session, clock) -> None:
    make_contact(session, clock, email="a@x.example", lifecycle="customer", gender="Frau")
    make_contact(session, clock, email="b@x.example", lifecycle="at_risk", language="en")
    make_contact(session, clock, email="c@x.example", lifecycle="churned", formality="Du")
    session.commit()
    _check(
        session,
        clock,
        [
            ({"field": "lifecycle", "op": "eq", "value": "customer"}, {"a"}),
            ({"field": "lifecycle", "op": "in", "value": ["customer", "at_risk"]}, {"a", "b"}),
            ({"field": "lifecycle", "op": "in", "value": ["Churned"]}, {"c"}),
            ({"field": "gender", "op": "eq", "value": "female"}, {"a"}),
            ({"field": "language", "op": "in", "value": ["en"]}, {"b"}),
            ({"field": "formality", "op": "eq", "value": "informal"}, {"c"}),
        ],
    )


def test_date_and_datetime_operators(session: Session, clock: FrozenClock) -> None:
    # The clock starts on 2026-01-05 09:00 UTC.
    make_contact(session, clock, email="old@x.example", birthday="1975-06-01")
    clock.advance(days=40)
    make_contact(session, clock, email="mid@x.example", birthday="1980-01-01")
    clock.advance(days=20)
    make_contact(session, clock, email="new@x.example", birthday=clock.now().date() - timedelta(5))
    make_contact(session, clock, email="none@x.example")
    session.commit()
    created_mid = (date(2026, 1, 5) + timedelta(days=40)).isoformat()  # 2026-02-14
    _check(
        session,
        clock,
        [
            ({"field": "birthday", "op": "before", "value": "1980-01-01"}, {"old"}),
            ({"field": "birthday", "op": "after", "value": "1980-01-01"}, {"new"}),
            ({"field": "birthday", "op": "after", "value": "31.12.1979"}, {"mid", "new"}),
            ({"field": "birthday", "op": "within_days", "value": 5}, {"new"}),
            ({"field": "birthday", "op": "within_days", "value": 4}, set()),
            ({"field": "birthday", "op": "more_than_days_ago", "value": 5}, {"old", "mid"}),
            ({"field": "created_at", "op": "within_days", "value": 30}, {"mid", "new", "none"}),
            ({"field": "created_at", "op": "within_days", "value": 19}, {"new", "none"}),
            ({"field": "created_at", "op": "within_days", "value": 20}, {"mid", "new", "none"}),
            ({"field": "created_at", "op": "more_than_days_ago", "value": 30}, {"old"}),
            ({"field": "created_at", "op": "more_than_days_ago", "value": 19}, {"old", "mid"}),
            ({"field": "created_at", "op": "before", "value": created_mid}, {"old"}),
            ({"field": "created_at", "op": "after", "value": created_mid}, {"new", "none"}),
            ({"field": "created_at", "op": "after", "value": "2026-02-13"}, {"mid", "new", "none"}),
            ({"field": "updated_at", "op": "more_than_days_ago", "value": 59}, {"old"}),
        ],
    )


def test_tags_and_owner_operators(session: Session, clock) -> None:
    owner = make_user(session, clock, role=Role.SALES)
    make_contact(session, clock, email="a@x.example", tags=["VIP", "Messe 2025"], owner_id=owner.id)
    make_contact(session, clock, email="b@x.example", tags=["vipx"])
    make_contact(session, clock, email="c@x.example")
    session.commit()
    _check(
        session,
        clock,
        [
            ({"field": "tags", "op": "has", "value": "vip"}, {"a"}),
            ({"field": "tags", "op": "has", "value": " Messe   2025 "}, {"a"}),
            ({"field": "tags", "op": "has", "value": "vi"}, set()),
            ({"field": "tags", "op": "has_not", "value": "VIP"}, {"b", "c"}),
            ({"field": "owner_id", "op": "eq", "value": owner.id}, {"a"}),
            ({"field": "owner_id", "op": "eq", "value": owner.id + 1}, set()),
            ({"field": "owner_id", "op": "is_empty"}, {"b", "c"}),
        ],
    )


def test_custom_fields_by_kind(session: Session, clock: FrozenClock) -> None:
    now = clock.now()
    create_field(session, key="plan", label="Plan", kind="choice", choices=["Pro", "Free"], now=now)
    create_field(session, key="seats", label="Seats", kind="number", choices=[], now=now)
    create_field(session, key="renewal", label="Renewal", kind="date", choices=[], now=now)
    create_field(session, key="branch", label="Branch", kind="text", choices=[], now=now)
    make_contact(
        session,
        clock,
        email="a@x.example",
        custom={"plan": "Pro", "seats": 12, "renewal": "2026-01-20", "branch": "Nord-Ost"},
    )
    make_contact(
        session,
        clock,
        email="b@x.example",
        custom={"plan": "Free", "seats": 2.5, "renewal": "01.12.2025"},
    )
    make_contact(session, clock, email="c@x.example")
    session.commit()
    _check(
        session,
        clock,
        [
            ({"field": "custom.plan", "op": "eq", "value": "pro"}, {"a"}),
            ({"field": "custom.plan", "op": "in", "value": ["Pro", "Free"]}, {"a", "b"}),
            ({"field": "custom.seats", "op": "eq", "value": 12}, {"a"}),
            ({"field": "custom.seats", "op": "gt", "value": 2.5}, {"a"}),
            ({"field": "custom.seats", "op": "gte", "value": "2,5"}, {"a", "b"}),
            ({"field": "custom.seats", "op": "lt", "value": 12}, {"b"}),
            ({"field": "custom.seats", "op": "lte", "value": 12}, {"a", "b"}),
            ({"field": "custom.renewal", "op": "before", "value": "2026-01-01"}, {"b"}),
            ({"field": "custom.renewal", "op": "after", "value": "2026-01-19"}, {"a"}),
            ({"field": "custom.renewal", "op": "within_days", "value": 40}, {"b"}),
            ({"field": "custom.renewal", "op": "more_than_days_ago", "value": 30}, {"b"}),
            ({"field": "custom.branch", "op": "starts_with", "value": "nord"}, {"a"}),
            ({"field": "custom.branch", "op": "contains", "value": "-o"}, {"a"}),
            ({"field": "custom.branch", "op": "neq", "value": "Nord-Ost"}, {"b", "c"}),
            ({"field": "custom.branch", "op": "is_empty"}, {"b", "c"}),
            ({"field": "custom.branch", "op": "is_not_empty"}, {"a"}),
        ],
    )
    assert validate_definition(
        {"conditions": [{"field": "custom.plan", "op": "eq", "value": " free "}]},
        definitions(session),
    )["conditions"] == [{"field": "custom.plan", "op": "eq", "value": "Free"}]


def test_event_conditions(session: Session, clock: FrozenClock) -> None:
    buyer = make_contact(session, clock, email="buyer@x.example")
    lapsed = make_contact(session, clock, email="lapsed@x.example")
    angry = make_contact(session, clock, email="angry@x.example")
    make_contact(session, clock, email="quiet@x.example")
    now = clock.now()
    record_event(
        session, "order", now=now, occurred_at=now - timedelta(days=10), contact_id=buyer.id
    )
    record_event(
        session, "order", now=now, occurred_at=now - timedelta(days=200), contact_id=lapsed.id
    )
    for days_ago in (5, 60, 120):
        record_event(
            session,
            "complaint",
            now=now,
            occurred_at=now - timedelta(days=days_ago),
            contact_id=angry.id,
        )
    record_event(
        session, "opened", now=now, occurred_at=now - timedelta(days=1), contact_id=buyer.id
    )
    session.commit()
    _check(
        session,
        clock,
        [
            ({"event": "order", "op": "within_days", "days": 180}, {"buyer"}),
            ({"event": "order", "op": "within_days", "days": 365}, {"buyer", "lapsed"}),
            (
                {"event": "order", "op": "none_within_days", "days": 180},
                {"lapsed", "angry", "quiet"},
            ),
            ({"event": "order", "op": "never"}, {"angry", "quiet"}),
            ({"event": "complaint", "op": "at_least", "count": 2, "days": 90}, {"angry"}),
            ({"event": "complaint", "op": "at_least", "count": 3, "days": 90}, set()),
            ({"event": "complaint", "op": "at_least", "count": 3, "days": 121}, {"angry"}),
            (
                {"event": "opened", "op": "none_within_days", "days": 60},
                {"lapsed", "angry", "quiet"},
            ),
            # Every contact has its contact_created event from the upsert.
            (
                {"event": "contact_created", "op": "within_days", "days": 1},
                {"buyer", "lapsed", "angry", "quiet"},
            ),
        ],
    )
    clock.advance(days=11)
    assert _local(
        _matching(session, clock, {"event": "order", "op": "within_days", "days": 22})
    ) == {"buyer"}
    assert _matching(session, clock, {"event": "order", "op": "within_days", "days": 20}) == set()


def test_groups_and_match_any(session: Session, clock) -> None:
    make_contact(session, clock, email="a@x.example", city="Berlin", lifecycle="customer")
    make_contact(session, clock, email="b@x.example", city="Hamburg", lifecycle="customer")
    make_contact(session, clock, email="c@x.example", city="Berlin", lifecycle="lead")
    make_contact(
        session, clock, email="d@x.example", city="Köln", lifecycle="churned", tags=["vip"]
    )
    session.commit()
    berlin = {"field": "city", "op": "eq", "value": "Berlin"}
    customer = {"field": "lifecycle", "op": "eq", "value": "customer"}
    vip = {"field": "tags", "op": "has", "value": "vip"}
    assert _local(_matching(session, clock, berlin, customer)) == {"a"}
    assert _local(_matching(session, clock, berlin, customer, match="any")) == {"a", "b", "c"}
    assert _local(_matching(session, clock, customer, {"any": [berlin, vip]})) == {"a"}
    assert _local(_matching(session, clock, {"any": [berlin, vip]})) == {"a", "c", "d"}
    assert _local(_matching(session, clock, vip, {"all": [berlin, customer]}, match="any")) == {
        "a",
        "d",
    }
    # No conditions: everyone.
    assert len(_matching(session, clock)) == 4


# -- validation ----------------------------------------------------------------------------------


def test_validate_normalises() -> None:
    clean = validate_definition(
        {
            "conditions": [
                {"field": "lifecycle", "op": "in", "value": ["customer", "Customer", "lead"]},
                {"field": "tags", "op": "has", "value": " VIP "},
                {"field": "birthday", "op": "before", "value": "01.02.1980"},
                {"any": [{"event": "order", "op": "never"}]},
            ]
        },
        {},
    )
    assert clean == {
        "match": "all",
        "conditions": [
            {"field": "lifecycle", "op": "in", "value": ["customer", "lead"]},
            {"field": "tags", "op": "has", "value": "vip"},
            {"field": "birthday", "op": "before", "value": "1980-02-01"},
            {"any": [{"event": "order", "op": "never"}]},
        ],
    }


def test_validation_names_every_problem_by_path() -> None:
    assert _errors(
        {
            "match": "some",
            "extra": 1,
            "conditions": [
                {"field": "lifecycle", "op": "in", "value": ["customer", "vip"]},
                {"field": "city", "op": "gt", "value": "x"},
                {"field": "nope", "op": "eq", "value": "x"},
                {"event": "order", "op": "at_least", "days": 30},
                {"event": "party", "op": "never"},
                {"field": "city", "op": "is_empty", "value": "x"},
                {"any": [{"any": [{"event": "order", "op": "never"}]}]},
                {"field": "city", "event": "order", "op": "never"},
                {"any": []},
                "city = 'Berlin'",
                {"field": "birthday", "op": "before", "value": "gestern"},
                {"field": "city", "op": "eq", "value": "Berlin", "sql": "1=1"},
            ],
        }
    ) == {
        "match": 'must be "all" or "any"',
        "extra": "is not allowed here",
        "conditions.0.value.1": ("must be one of lead, customer, at_risk, churned, won_back"),
        "conditions.1.op": "must be one of eq, neq, contains, starts_with, is_empty, is_not_empty",
        "conditions.2.field": "is not a known field",
        "conditions.3.count": "is required",
        "conditions.4.event": (
            "is not a known event type; use one of order, complaint, cancellation, "
            "expected_revenue, call, meeting, note, sent, bounced, opened, clicked, replied, "
            "contact_created"
        ),
        "conditions.5.value": "must be left out for this operator",
        "conditions.6.any.0": "groups can be nested only one level deep",
        "conditions.7": "must have exactly one of the keys field, event, consent, any, all",
        "conditions.8.any": "must contain at least one condition",
        "conditions.9": "must be an object",
        "conditions.10.value": "must be a date as YYYY-MM-DD",
        "conditions.11.sql": "is not allowed here",
    }


def test_limits() -> None:
    city = {"field": "city", "op": "eq", "value": "Berlin"}
    assert _errors({"conditions": [city] * 51}) == {"conditions": "must hold at most 50 conditions"}
    assert _errors({"conditions": [{"any": [city] * 30}, {"any": [city] * 21}]}) == {
        "conditions": "must hold at most 50 conditions"
    }
    assert validate_definition({"conditions": [city] * 50}, {})["conditions"] == [city] * 50
    assert _errors({"conditions": [{"field": "city", "op": "eq", "value": "x" * 201}]}) == {
        "conditions.0.value": "must be at most 200 characters"
    }
    assert _errors(
        {"conditions": [{"field": "lifecycle", "op": "in", "value": ["lead"] * 101}]}
    ) == {"conditions.0.value": "must be a list of 1 to 100 values"}
    assert _errors({"conditions": [{"event": "order", "op": "within_days", "days": 3651}]}) == {
        "conditions.0.days": "must be a whole number from 1 to 3650"
    }
    assert _errors(
        {"conditions": [{"event": "order", "op": "at_least", "count": 1001, "days": 1}]}
    ) == {"conditions.0.count": "must be a whole number from 1 to 1000"}
    assert _errors({"conditions": "all"}) == {"conditions": "must be a list"}
    assert _errors({}) == {"conditions": "is required"}
    assert _errors([]) == {"definition": "must be an object"}


def test_segment_error_carries_translatable_messages() -> None:
    with pytest.raises(SegmentError) as caught:
        validate_definition({"conditions": [{"field": "city", "op": "eq", "value": "x" * 300}]}, {})
    message = caught.value.messages["conditions.0.value"]
    assert message == Message("must be at most %(max)d characters", {"max": 200})
    assert str(caught.value) == "The segment is invalid: conditions.0.value"


# -- injection -----------------------------------------------------------------------------------

PAYLOADS: list[Any] = [
    "x' OR 1=1 --",
    "'); DROP TABLE contacts; --",
    "custom.a') or 1=1--",
    '" OR ""="',
    "1; DELETE FROM contacts",
    "%",
    "_",
    "\\",
    "x\x00y",
    "$.a') OR 1=1",
    {"$gt": ""},
    ["x' OR 1=1 --"],
    "y" * 10_000,
    True,
    None,
    1.5,
    -1,
    0,
    10**30,
    [],
    {},
]


def _refused_or_literal(session: Session, clock: FrozenClock, definition: Any, total: int) -> None:
    try:
        expr = compile_definition(definition, now=clock.now(), custom_fields=definitions(session))
    except SegmentError as exc:
        assert exc.errors and all(isinstance(m, str) and m for m in exc.errors.values())
        return
    # Accepted: only as a literal value, which no contact here holds (no conditions: everyone).
    expected = total if definition == {"conditions": []} else 0
    assert session.scalar(select(func.count()).select_from(Contact).where(expr)) == expected
    assert session.scalar(select(func.count()).select_from(Contact)) == total


def test_injection_payloads_are_refused_or_matched_literally(session: Session, clock) -> None:
    create_field(session, key="a", label="A", kind="text", choices=[], now=clock.now())
    create_field(session, key="n", label="N", kind="number", choices=[], now=clock.now())
    for index in range(3):
        make_contact(session, clock, city="Berlin", last_name=f"Name{index}", custom={"a": "b"})
    session.commit()
    total = 3
    positions = [
        lambda p: {"match": p, "conditions": []},
        lambda p: {"conditions": p},
        lambda p: {"conditions": [p]},
        lambda p: {"conditions": [{"field": p, "op": "eq", "value": "x"}]},
        lambda p: {"conditions": [{"field": "city", "op": p, "value": "x"}]},
        lambda p: {"conditions": [{"field": "city", "op": "eq", "value": p}]},
        lambda p: {"conditions": [{"field": "city", "op": "contains", "value": p}]},
        lambda p: {"conditions": [{"field": "last_name", "op": "starts_with", "value": p}]},
        lambda p: {"conditions": [{"field": "email", "op": "starts_with", "value": p}]},
        lambda p: {"conditions": [{"field": "lifecycle", "op": "in", "value": [p]}]},
        lambda p: {"conditions": [{"field": "lifecycle", "op": "eq", "value": p}]},
        lambda p: {"conditions": [{"field": "tags", "op": "has", "value": p}]},
        lambda p: {"conditions": [{"field": "owner_id", "op": "eq", "value": p}]},
        lambda p: {"conditions": [{"field": "birthday", "op": "before", "value": p}]},
        lambda p: {"conditions": [{"field": "created_at", "op": "within_days", "value": p}]},
        lambda p: {"conditions": [{"field": f"custom.{p}", "op": "eq", "value": "b"}]},
        lambda p: {"conditions": [{"field": "custom.a", "op": "eq", "value": p}]},
        lambda p: {"conditions": [{"field": "custom.n", "op": "gt", "value": p}]},
        lambda p: {"conditions": [{"event": p, "op": "never"}]},
        lambda p: {"conditions": [{"event": "order", "op": p, "days": 1}]},
        lambda p: {"conditions": [{"event": "order", "op": "within_days", "days": p}]},
        lambda p: {"conditions": [{"event": "order", "op": "at_least", "count": p, "days": 5}]},
        lambda p: {"conditions": [{"any": [{"field": "city", "op": "eq", "value": p}]}]},
        lambda p: {"conditions": [{"any": p}]},
        lambda p: {"conditions": [{p: "x"}] if isinstance(p, str) else [p]},
    ]
    for position in positions:
        for payload in PAYLOADS:
            _refused_or_literal(session, clock, position(payload), total)
    assert session.scalar(select(func.count()).select_from(Contact)) == total


def test_injection_messages_are_exact() -> None:
    assert _errors(
        {
            "match": "all' OR 1=1 --",
            "conditions": [
                {"field": "city') OR 1=1 --", "op": "eq", "value": "x"},
                {"field": "custom.a') or 1=1--", "op": "eq", "value": "x"},
                {"field": "city", "op": "eq; DROP TABLE contacts", "value": "x"},
                {"field": "city", "op": "eq", "value": {"$gt": ""}},
                {"event": "order'--", "op": "never"},
                {"event": "order", "op": "within_days", "days": 1.5},
                {"event": "order", "op": "within_days", "days": True},
                {"event": "order", "op": "at_least", "count": "2", "days": 30},
                {"field": "owner_id", "op": "eq", "value": "3 OR 1=1"},
                {"field": "lifecycle", "op": "in", "value": "customer"},
            ],
        }
    ) == {
        "match": 'must be "all" or "any"',
        "conditions.0.field": "is not a known field",
        "conditions.1.field": "is not a known field",
        "conditions.2.op": "must be one of eq, neq, contains, starts_with, is_empty, is_not_empty",
        "conditions.3.value": "must be text",
        "conditions.4.event": (
            "is not a known event type; use one of order, complaint, cancellation, "
            "expected_revenue, call, meeting, note, sent, bounced, opened, clicked, replied, "
            "contact_created"
        ),
        "conditions.5.days": "must be a whole number from 1 to 3650",
        "conditions.6.days": "must be a whole number from 1 to 3650",
        "conditions.7.count": "must be a whole number from 1 to 1000",
        "conditions.8.value": "must be a user id",
        "conditions.9.value": "must be a list of 1 to 100 values",
    }


def test_a_literal_quote_matches_the_contact_that_has_it(session: Session, clock) -> None:
    make_contact(session, clock, email="o@x.example", last_name="O'Brien", city="x' OR 1=1 --")
    make_contact(session, clock, email="p@x.example", last_name="Other")
    session.commit()
    assert _local(
        _matching(session, clock, {"field": "last_name", "op": "starts_with", "value": "o'b"})
    ) == {"o"}
    assert _local(
        _matching(session, clock, {"field": "city", "op": "eq", "value": "x' OR 1=1 --"})
    ) == {"o"}


# -- the extension point -------------------------------------------------------------------------


def test_register_condition_adds_a_kind_without_touching_the_compiler(
    session: Session, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "_KINDS", dict(segments._KINDS))

    def validate(condition: dict[str, Any], _ctx: ValidationContext) -> dict[str, Any]:
        if set(condition) - {"consent", "op"}:
            raise ConditionInvalid({"": Message("is not allowed here")})
        if condition.get("op") != "confirmed":
            raise ConditionInvalid({"op": Message("must be confirmed")})
        return {"consent": str(condition["consent"]), "op": "confirmed"}

    def compile(condition: dict[str, Any], _ctx: CompileContext) -> ColumnElement[bool]:
        # A stand-in for a consent table: the slug must be among the tags.
        return segments.TagsHave(Contact.tags, condition["consent"])

    register_condition("consent", validate, compile)
    make_contact(session, clock, email="yes@x.example", tags=["newsletter"])
    make_contact(session, clock, email="no@x.example")
    session.commit()
    assert _local(_matching(session, clock, {"consent": "newsletter", "op": "confirmed"})) == {
        "yes"
    }
    assert _errors({"conditions": [{"consent": "newsletter", "op": "maybe"}]}) == {
        "conditions.0.op": "must be confirmed"
    }
    with pytest.raises(ValueError):
        register_condition("any", validate, compile)


# -- services ------------------------------------------------------------------------------------


def test_segment_services(session: Session, clock: FrozenClock) -> None:
    user = make_user(session, clock)
    contacts = [make_contact(session, clock, city="Berlin") for _ in range(5)]
    make_contact(session, clock, city="Hamburg")
    session.commit()
    definition = {"conditions": [{"field": "city", "op": "eq", "value": "berlin"}]}
    segment = create_segment(
        session, name=" Berlin  people ", definition=definition, user=user, now=clock.now()
    )
    session.commit()
    assert (segment.name, segment.created_by_id) == ("Berlin people", user.id)
    assert segment.definition == {"match": "all", "conditions": definition["conditions"]}

    with pytest.raises(SegmentError) as caught:
        create_segment(
            session, name="berlin PEOPLE", definition={"conditions": []}, user=user, now=clock.now()
        )
    assert caught.value.errors == {"name": "is already the name of another segment"}
    with pytest.raises(SegmentError) as caught:
        create_segment(
            session, name="", definition={"conditions": [{}]}, user=None, now=clock.now()
        )
    assert caught.value.errors == {
        "name": "must be 1 to 100 characters long",
        "conditions.0": "must have exactly one of the keys field, event, consent, any, all",
    }

    now = clock.now()
    assert count_matching(session, segment.definition, now=now) == 5
    assert [c.id for c in sample_matching(session, segment.definition, now=now, limit=3)] == [
        c.id for c in contacts[:3]
    ]
    assert list(session.scalars(segment_query(session, segment, now=now))) == [
        c.id for c in contacts
    ]
    first = list_matching(session, segment.definition, now=now, limit=2)
    assert first == [(c.id, c.email) for c in contacts[:2]]
    rest = list_matching(session, segment.definition, now=now, after_id=first[-1][0], limit=10)
    assert [row[0] for row in rest] == [c.id for c in contacts[2:]]

    clock.advance(hours=1)
    assert not update_segment(
        session, segment, name="Berlin people", definition=definition, now=clock.now()
    )
    assert update_segment(
        session,
        segment,
        name="Hamburg",
        definition={"conditions": [{"field": "city", "op": "eq", "value": "Hamburg"}]},
        now=clock.now(),
    )
    session.commit()
    assert segment.updated_at == clock.now() and segment.created_at < clock.now()
    assert count_matching(session, segment.definition, now=clock.now()) == 1
    assert [s.name for s in list_segments(session)] == ["Hamburg"]
    delete_segment(session, segment)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Segment)) == 0


def test_a_stored_definition_whose_custom_field_is_gone_is_reported(
    session: Session, clock
) -> None:
    field = create_field(
        session, key="plan", label="Plan", kind="text", choices=[], now=clock.now()
    )
    segment = create_segment(
        session,
        name="Pro",
        definition={"conditions": [{"field": "custom.plan", "op": "eq", "value": "Pro"}]},
        user=None,
        now=clock.now(),
    )
    session.delete(field)
    session.commit()
    with pytest.raises(SegmentError) as caught:
        count_matching(session, segment.definition, now=clock.now())
    assert caught.value.errors == {"conditions.0.field": "is not a known field"}


def test_empty_definition_compiles_to_true() -> None:
    expr = compile_definition({"conditions": []}, now=FrozenClock().now(), custom_fields={})
    assert expr.compare(true())

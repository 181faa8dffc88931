"""The regex fast path of normalise_email must give email-validator's answers."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nurture.contacts.fields import _FAST_EMAIL, normalise_email

LOCAL = st.text(alphabet="abcXYZ019._+-", min_size=1, max_size=70)
LABEL = st.text(alphabet="abKZ09-", min_size=1, max_size=66)
TLD = st.sampled_from(["de", "com", "example", "test", "local", "x", "c0m", "museum", "xn--p1ai"])


def _validator(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _ours(address: str) -> str | None:
    try:
        return normalise_email(address)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(local=LOCAL, labels=st.lists(LABEL, min_size=1, max_size=3), tld=TLD)
@example(local="a", labels=["ab--cd"], tld="de")
@example(local="a", labels=["x"], tld="test")
@example(local="a" * 64, labels=["b" * 63], tld="de")
@example(local="a" * 65, labels=["b"], tld="de")
@example(local="a", labels=["b" * 64], tld="de")
@example(local="a", labels=["b" * 63] * 4, tld="de")
def test_fast_path_agrees_with_email_validator(local: str, labels: list[str], tld: str) -> None:
    address = f"{local}@{'.'.join(labels)}.{tld}"
    assert _ours(address) == _validator(address)


@pytest.mark.parametrize(
    "address",
    ["Anna.Mueller@Firma.DE", "kunde+news@shop-24.example", "x_y@a.b.co"],
)
def test_everyday_addresses_take_the_fast_path(address: str) -> None:
    assert _FAST_EMAIL.fullmatch(address)
    assert normalise_email(address) == address.lower()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Jürgen@Müller.de", "jürgen@müller.de"),
        ("info@BÜCHER.example", "info@bücher.example"),
    ],
)
def test_unicode_addresses_go_through_email_validator(address: str, expected: str) -> None:
    assert not _FAST_EMAIL.fullmatch(address)
    assert normalise_email(address) == expected

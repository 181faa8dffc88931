"""Header checks: raw and RFC 2047-encoded line breaks are refused (CVE-2024-6923)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nurture.mail.headers import (
    HeaderInjectionError,
    check_address,
    check_header_value,
    clean_header_text,
    decode_encoded_words,
)

CVE_SUBJECT = "=?utf-8?q?Hi=0D=0ABcc:_x@example.org?="


def _b(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.parametrize(
    "value",
    [
        "Hi\r\nBcc: x@example.org",
        "Hi\nBcc: x@example.org",
        "Hi\rBcc: x@example.org",
        "Hi\x00there",
        "Hi\x0bthere",
        "Hi\x1bthere",
        "Hi\u2028Bcc: x@example.org",  # str.splitlines() breaks here, so the stdlib folder does
        "Hi\x85Bcc: x@example.org",
    ],
)
def test_raw_controls_are_refused(value: str) -> None:
    with pytest.raises(HeaderInjectionError, match=r"^Header Subject contains .*; refused\.$"):
        check_header_value("Subject", value)


@pytest.mark.parametrize(
    "value",
    [
        CVE_SUBJECT,
        "=?UTF-8?Q?Hi=0ABcc:_x@example.org?=",
        "Hello " + _b("Hi\r\nBcc: x@example.org"),
        "=?utf-8?b?SGkNCkJjYzogeEBleGFtcGxlLm9yZw?=",  # padding left off
        "=?utf-8*en?q?Hi=0D=0ABcc:_x?=",  # RFC 2231 language tag
        "=?x-unknown?q?Hi=0ABcc:_x?=",  # unknown charset: still decoded as bytes
        "=?iso-8859-1?q?Hi=00?=",
        "prefix=?utf-8?q?=0A?=suffix",  # not whitespace-delimited; some decoders accept it
        _b("=?utf-8?q?Hi=0D=0ABcc:_x@example.org?="),  # an encoded word inside an encoded word
    ],
)
def test_encoded_line_breaks_are_refused(value: str) -> None:
    with pytest.raises(HeaderInjectionError, match="after decoding") as caught:
        check_header_value("Subject", value)
    assert caught.value.field == "Subject"
    assert caught.value.value == value


def test_error_message_names_the_field() -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        check_header_value("Subject", CVE_SUBJECT)
    assert str(caught.value) == "Header Subject contains a line break after decoding; refused."
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "value",
    [
        "Hello",
        "",
        "Tab\tseparated",
        "Grüße aus Köln 🎉",
        "=?utf-8?q?Gr=C3=BC=C3=9Fe?= and =?utf-8?b?S8O2bG4=?=",
        "=?utf-8?q?broken",
        "=?utf-8?b?!!!notbase64?=",
        "50% =? off ?=",
    ],
)
def test_harmless_values_pass_unchanged(value: str) -> None:
    assert check_header_value("Subject", value) is value


def test_decode_encoded_words_follows_rfc_2047() -> None:
    assert decode_encoded_words("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"  # space between words
    assert decode_encoded_words("=?utf-8?q?a?= b") == "a b"
    assert (
        decode_encoded_words("=?utf-8?q?caf=C3=A9_au?=\r\n =?utf-8?b?bGFpdA==?=") == "café aulait"
    )
    assert decode_encoded_words("=?utf-8?b?a?=") == "=?utf-8?b?a?="  # malformed stays literal
    assert decode_encoded_words("=?utf-8?x?abc?=") == "=?utf-8?x?abc?="


@pytest.mark.parametrize(
    "address",
    ["a@example.org", "o'brien+tag@mail.example.co.uk", "x_y.z@xn--bcher-kva.de", "ü@bücher.de"],
)
def test_plain_addresses_pass(address: str) -> None:
    assert check_address("To", address) is address


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org\r\nBcc: x@example.org",
        "a@example.org\n",
        "a@b@example.org",
        "example.org",
        "a b@example.org",
        "<a@example.org>",
        "a@example.org, b@example.org",
        "a;b@example.org",
        '"a"@example.org',
        ".a@example.org",
        "a..b@example.org",
        "a@-example.org",
        "a@example..org",
        "a@",
        "@example.org",
        "=?utf-8?q?a=0A?=@example.org",
        "a" * 310 + "@example.org",
    ],
)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(HeaderInjectionError) as caught:
        check_address("To", address)
    assert caught.value.field == "To"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (CVE_SUBJECT, "Hi Bcc: x@example.org"),
        ("Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n aus\tKöln", "Re: Grüße aus Köln"),
        ("  padded \x00 text\x1b  ", "padded text"),
        ("line\u2028separator\x85next", "line separator next"),
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("", ""),
    ],
)
def test_clean_header_text(raw: str, clean: str) -> None:
    assert clean_header_text(raw) == clean


@given(st.text())
def test_clean_header_text_never_raises_and_is_always_acceptable(raw: str) -> None:
    cleaned = clean_header_text(raw)
    assert cleaned == cleaned.strip()
    # Rebuilt subjects must pass our own check; "=?" is defused because text that decodes to
    # an encoded word of a line break is refused by design, not cleaned.
    assert check_header_value("Subject", cleaned.replace("=?", "= ?")) is not None

"""The fast builder against the stdlib's parser, and against the EmailMessage reference builder.

Normalisations the comparisons allow for (see nurture.mail.message): body line endings become
LF and a final newline is added; display names have whitespace runs collapsed, ends stripped;
Date loses microseconds. Python 3.11's parser returns CRLF inside decoded bodies; we compare LF.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import idna
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from nurture.mail.headers import (
    HeaderInjectionError,
    check_address,
    check_header_value,
    decode_encoded_words,
)
from nurture.mail.message import MessageParts, MessageSkeleton, build_reference

SKELETON = {
    "from_addr": "news@example.org",
    "from_name": "Müller, Hans",
    "list_id": "Newsletter <news.example.org>",
    "feedback_id": "c1:t2:nurture:news",
}
DATE = datetime(2025, 3, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=1)))
HEADERS = ("Date", "From", "To", "Subject", "Message-ID", "Reply-To", "MIME-Version",
           "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Feedback-ID",
           "X-Auto-Response-Suppress")  # fmt: skip
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Controls and line separators are refused in headers by design; TAB is allowed.
_chars = st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")) | st.sampled_from("\t")
_tricky = st.sampled_from(["=?", "?=", "=?utf-8?q?abc?=", '"', ",", "\\", "(", "<", "@", ".", " "])
unicode_text = st.lists(_chars | _tricky, max_size=40).map("".join)
_atext = st.sampled_from("abcxyzABC0189!#$%&'*+-/=?^_`{|}~")
local_parts = (
    st.lists(st.text(_atext, min_size=1, max_size=8), min_size=1, max_size=3)
    .map(".".join)
    .filter(lambda local: "=?" not in local)
)
_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True).filter(
    lambda label: label[2:4] != "--"  # reserved for A-labels; IDNA 2008 refuses it in IDNs
)
domains = st.tuples(_label | st.sampled_from(["bücher", "straße", "日本"]), _label).map(".".join)
tokens = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)  # keeps ids under 78
zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
dates = st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=zones)
_line = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=120)
_line = _line | st.sampled_from([".", "..", ".dot", "From me", "From ", "trailing  ", "tab\t"])
bodies = st.lists(_line, max_size=12).map("\n".join)


def _expected_name(name: str) -> str:
    return " ".join(name.split())


def _idna(domain: str) -> str:
    return domain if domain.isascii() else idna.encode(domain, uts46=True).decode()


def _lf(text: str) -> str:
    text = text.replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def _parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def _assert_wire_format(raw: bytes, max_line: int, seven_bit: bool = True) -> None:
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, line
        assert len(line) <= max_line, line
    assert raw.isascii() or not seven_bit


def _contents(msg: EmailMessage) -> tuple[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    return plain.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


@st.composite
def message_parts(
    draw: st.DrawFn,
    subjects: st.SearchStrategy[str] = unicode_text,
    names: st.SearchStrategy[str] = unicode_text,
) -> MessageParts:
    unsubscribe = draw(st.booleans())
    mailto = st.none() | st.builds(lambda t: f"mailto:unsubscribe+{t}@example.org", tokens)
    return MessageParts(
        to_addr=f"{draw(local_parts)}@{draw(domains)}",
        to_name=draw(names),
        subject=draw(subjects),
        html=draw(bodies),
        text=draw(bodies),
        message_id=f"<{draw(tokens)}.{draw(tokens)}@mail.example.org>",
        date=draw(dates),
        reply_to=draw(st.none() | st.builds(lambda t: f"reply+{t}@example.org", tokens)),
        unsubscribe_url=f"https://example.org/u/{draw(tokens)}" if unsubscribe else None,
        unsubscribe_mailto=draw(mailto) if unsubscribe else None,
    )


def _build(parts: MessageParts) -> bytes:
    try:
        check_header_value("Subject", parts.subject)
        check_header_value("To", parts.to_name)
    except HeaderInjectionError:
        reject()  # an encoded word that decodes to a line break: refused, as tested below
    return MessageSkeleton(**SKELETON).build(parts)


def _assert_matches_inputs(msg: EmailMessage, parts: MessageParts) -> None:
    assert str(msg["Subject"]) == parts.subject
    assert msg["Date"].datetime == parts.date.replace(microsecond=0)
    assert msg["Message-ID"] == parts.message_id
    (to,) = msg["To"].addresses
    assert to.display_name == _expected_name(parts.to_name)
    local, domain = parts.to_addr.split("@")
    assert (to.username, to.domain) == (local, _idna(domain))
    (sender,) = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Müller, Hans", "news@example.org")
    assert msg["Reply-To"] == parts.reply_to
    if parts.unsubscribe_url:
        mailto = f", <{parts.unsubscribe_mailto}>" if parts.unsubscribe_mailto else ""
        assert msg["List-Unsubscribe"].strip() == f"<{parts.unsubscribe_url}>{mailto}"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    else:
        assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    assert msg["List-Id"] == "Newsletter <news.example.org>"
    assert msg["Feedback-ID"] == "c1:t2:nurture:news"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert _contents(msg) == (_lf(parts.text), _lf(parts.html))


# Display names of up to 45 UTF-8 octets always fit one encoded word; longer ones are split, and
# Python 3.11's address parser wrongly keeps the space between encoded words (RFC 2047 §6.2
# drops it). test_long_display_names_follow_rfc_2047 covers those with an RFC decoder.
short_names = unicode_text.filter(lambda name: len(name.encode()) <= 45)


@PROPERTY
@given(message_parts(names=short_names))
def test_fast_builder_round_trips_through_the_stdlib_parser(parts: MessageParts) -> None:
    raw = _build(parts)
    _assert_wire_format(raw, max_line=78)
    _assert_matches_inputs(_parse(raw), parts)


@PROPERTY
@given(message_parts(names=st.text(_chars, min_size=12, max_size=80).map(lambda n: n + "é")))
def test_long_display_names_follow_rfc_2047(parts: MessageParts) -> None:
    raw = _build(parts)
    _assert_wire_format(raw, max_line=78)
    to = re.search(rb"^To: (.*?)\r\n(?! )", raw, re.M | re.S).group(1).decode()
    phrase = decode_encoded_words(to.replace("\r\n", ""))
    assert phrase.rsplit(" <", 1)[0] == _expected_name(parts.to_name)


# Values the stdlib reference itself round-trips: it decodes encoded-word look-alikes when they
# are assigned, drops leading blanks and turns tabs into spaces. Within those, both must agree.
_tame_chars = st.characters(categories=("L", "N"), exclude_characters="\x85") | st.sampled_from(
    " ,.!?:-'\"()"
)
tame_text = st.text(_tame_chars, max_size=40).map(lambda s: " ".join(s.split()))
_tame_line = st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=200)
tame_bodies = st.lists(_tame_line | st.sampled_from([".", "From me", "x  "]), max_size=8)


@PROPERTY
@given(
    message_parts(subjects=tame_text, names=tame_text.map(lambda s: s[:11].strip())),
    tame_bodies.map("\n".join),
    tame_bodies.map("\n".join),
)
def test_fast_and_reference_builders_agree(parts: MessageParts, text: str, html: str) -> None:
    parts = dataclasses.replace(parts, text=text, html=html)
    fast = _parse(_build(parts))
    reference_raw = build_reference(SKELETON, parts).as_bytes()
    _assert_wire_format(reference_raw, max_line=998, seven_bit=False)  # the stdlib sends 8bit
    reference = _parse(reference_raw)
    _assert_matches_inputs(fast, parts)
    _assert_matches_inputs(reference, parts)
    for name in HEADERS:
        assert str(fast[name] or "").strip() == str(reference[name] or "").strip(), name
    assert _contents(fast) == _contents(reference)


def _parts(**changes: object) -> MessageParts:
    base = {
        "to_addr": "kunde@example.com",
        "to_name": "Jürgen Beispiel",
        "subject": "Ihr Frühlingsrabatt",
        "html": "<p>Hallo</p>",
        "text": "Hallo",
        "message_id": "<m1.abc@mail.example.org>",
        "date": DATE,
        "unsubscribe_url": "https://example.org/u/tok",
        "unsubscribe_mailto": "mailto:unsubscribe+tok@example.org",
    }
    return MessageParts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "=?utf-8?q?Hi=0D=0ABcc:_x@example.org?="},
        {"subject": "Hi\r\nBcc: x@example.org"},
        {"to_name": "=?utf-8?q?Eve=0D=0ABcc:_x@example.org?="},
        {"to_addr": "kunde@example.com\r\nBcc: x@example.org"},
        {"reply_to": "a@example.org\nBcc: x@example.org"},
        {"message_id": "<m1@example.org>\r\nBcc: x@example.org"},
        {"message_id": "m1@example.org"},
        {"unsubscribe_url": "https://example.org/u/=?utf-8?q?=0ABcc:_x?="},
        {"unsubscribe_url": "https://example.org/u/a>, <https://evil.example"},
        {"extra_headers": (("X-Campaign", "=?utf-8?b?eA0KQmNjOiB4QGV4YW1wbGUub3Jn?="),)},
        {"extra_headers": (("Bcc", "x@example.org"),)},
        {"extra_headers": (("X-Evil: y\r\nBcc", "x@example.org"),)},
    ],
)
def test_header_injection_is_refused(changes: dict) -> None:
    with pytest.raises(HeaderInjectionError):
        MessageSkeleton(**SKELETON).build(_parts(**changes))
    with pytest.raises(HeaderInjectionError):
        build_reference(SKELETON, _parts(**changes))


def test_skeleton_values_are_checked_too() -> None:
    with pytest.raises(HeaderInjectionError):
        MessageSkeleton(from_addr="a@example.org", from_name="=?utf-8?q?x=0ABcc:_y?=")
    with pytest.raises(HeaderInjectionError):
        MessageSkeleton(from_addr="a@example.org", from_name="x", list_id="x\r\nBcc: y")
    with pytest.raises(HeaderInjectionError):
        MessageSkeleton(from_addr="a@example.org", from_name="x", feedback_id="a b")


def test_harmless_message_has_exactly_the_expected_headers() -> None:
    msg = _parse(MessageSkeleton(**SKELETON, extra_headers=[("Precedence", "x")]).build(_parts()))
    assert msg["Bcc"] is None
    assert [k for k in msg if k.lower() in {"bcc", "cc", "to"}] == ["To"]
    assert msg["Precedence"] == "x"
    assert list(msg.keys())[:3] == ["Date", "From", "To"]
    assert list(msg.keys())[-1] == "Content-Type"


def test_display_names_with_specials_survive() -> None:
    skeleton = MessageSkeleton(from_addr="a@b.de", from_name="Müller, Hans")
    msg = _parse(skeleton.build(_parts(to_name='Dr. "Bob" O\'Brien, Jr.')))
    assert msg["From"].addresses[0].display_name == "Müller, Hans"
    assert msg["To"].addresses[0].display_name == 'Dr. "Bob" O\'Brien, Jr.'


def test_idn_domains_and_smtputf8_local_parts() -> None:
    msg = _parse(MessageSkeleton(**SKELETON).build(_parts(to_addr="kunde@bücher.de")))
    assert msg["To"].addresses[0].domain == "xn--bcher-kva.de"
    with pytest.raises(HeaderInjectionError, match="invalid domain"):
        MessageSkeleton(**SKELETON).build(_parts(to_addr="kunde@bü--cher.de"))
    with pytest.raises(ValueError, match="SMTPUTF8"):
        MessageSkeleton(**SKELETON).build(_parts(to_addr="jürgen@example.com"))
    assert check_address("To", "jürgen@example.com")  # a plain addr-spec, just not sendable yet


def test_one_click_needs_https() -> None:
    with pytest.raises(ValueError, match="https"):
        MessageSkeleton(**SKELETON).build(_parts(unsubscribe_url=None))
    with pytest.raises(HeaderInjectionError):
        MessageSkeleton(**SKELETON).build(_parts(unsubscribe_url="ftp://example.org/u/t"))
    # A plain-http base URL (embedded mode) keeps List-Unsubscribe but never claims one-click.
    plain = MessageSkeleton(**SKELETON).build(_parts(unsubscribe_url="http://example.org/u/t"))
    assert b"List-Unsubscribe: <http://example.org/u/t>" in plain
    assert b"List-Unsubscribe-Post" not in plain
    raw = MessageSkeleton(**SKELETON).build(_parts(unsubscribe_url=None, unsubscribe_mailto=None))
    assert b"List-Unsubscribe" not in raw


def test_naive_dates_are_refused_and_odd_offsets_become_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MessageSkeleton(**SKELETON).build(_parts(date=datetime(2025, 1, 1)))
    odd = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(minutes=30, seconds=7)))
    msg = _parse(MessageSkeleton(**SKELETON).build(_parts(date=odd)))
    assert msg["Date"].datetime == odd and msg["Date"].datetime.utcoffset() == timedelta(0)


def test_body_encodings() -> None:
    raw = MessageSkeleton(**SKELETON).build(_parts(text="From here\n.\nend  ", html="Привет " * 50))
    assert b"\r\n=46rom here\r\n=2E\r\nend =20\r\n" in raw  # mbox- and SMTP-safe
    assert b"Content-Transfer-Encoding: base64" in raw  # Cyrillic: base64 is shorter than QP
    boundary = _parse(raw).get_boundary().encode()
    assert raw.count(boundary) == 4 and boundary.startswith(b"=_")  # header + 3 delimiters

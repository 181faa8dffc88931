"""Fast message builder: constant headers are encoded once per template version, bytes out.

``EmailMessage`` costs milliseconds per message (header objects, policy folding, generator); the
outbox needs thousands per second. A :class:`MessageSkeleton` holds the encoded constant headers;
``build()`` encodes only the per-recipient values with the stdlib's encoders and joins bytes.
:func:`build_reference` builds the same message with ``EmailMessage``: the oracle for the tests.

Decisions, relied on by the tests:

* Display names: every whitespace run (NBSP included) becomes one space and the ends are
  stripped (a phrase carries no more). ASCII atoms stay readable; other runs of words become
  encoded words.
* Subjects keep every character; they are sent as encoded words unless plain printable ASCII.
* Bodies: CRLF/CR become LF and a final newline is added (as ``set_content`` does). A part is
  quoted-printable unless base64 is shorter (mostly non-Latin text); both are 7-bit with lines of
  at most 76 octets. A line starting with "From " is sent as "=46rom " so mbox-style delivery
  cannot rewrite it to ">From " and break the DKIM body hash.
* Addresses: non-ASCII domains are sent as IDNA 2008 (UTS 46) A-labels; a non-ASCII local part
  raises ValueError because it needs SMTPUTF8, which nurture does not support yet.
* Header lines stay within 78 characters except where one token is longer (a long address or
  URL); no line exceeds 998 octets because such values are refused.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from nurture.mail.headers import (
    HeaderInjectionError,
    ascii_address,
    check_header_value,
    display_name,
    encode_mailbox,
    encode_phrase,
    encode_unstructured,
    fold_header,
)

__all__ = ["MessageParts", "MessageSkeleton", "build_reference"]

_MAX_URL = 900  # "<url>," must fit in one 998-octet line
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_VCHAR = re.compile(r"[!-~]+")
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_MESSAGE_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
_LIST_ID = re.compile(rf"{_ATEXT}\.{_DOT_ATOM}")  # RFC 2919: list-label "." namespace
# Set by the builder (or by the MTA): an extra header must not duplicate or shadow them.
_GENERATED = frozenset(
    {
        "date", "from", "sender", "to", "cc", "bcc", "subject", "message-id", "reply-to",
        "mime-version", "list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id",
        "x-auto-response-suppress", "dkim-signature", "return-path", "received",
    }
)  # fmt: skip
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class MessageParts:
    """Everything that varies per recipient."""

    to_addr: str
    to_name: str
    subject: str
    html: str
    text: str
    message_id: str  # full "<token@domain>"
    date: datetime  # tz-aware
    reply_to: str | None = None
    unsubscribe_url: str | None = None  # https URL (one-click); http only in embedded mode
    unsubscribe_mailto: str | None = None  # "mailto:unsubscribe+TOKEN@domain"
    extra_headers: tuple[tuple[str, str], ...] = ()


def _mailbox(field: str, name: str, address: str) -> tuple[str, str]:
    return display_name(check_header_value(field, name)), ascii_address(field, address)


def _checked_extra(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    for name, value in headers:
        lower = name.lower()
        if not _FIELD_NAME.fullmatch(name):
            raise HeaderInjectionError(repr(name), value, "has an invalid field name")
        if lower in _GENERATED or lower.startswith(("content-", "resent-")):
            raise HeaderInjectionError(name, value, "is set by the builder, not by extra headers")
        check_header_value(name, value)
    return tuple(headers)


def _checked_uri(field: str, uri: str, scheme: str) -> str:
    check_header_value(field, uri)
    if not uri.startswith(scheme) or not _VCHAR.fullmatch(uri) or len(uri) > _MAX_URL:
        raise HeaderInjectionError(field, uri, f"is not a {scheme} URI without spaces")
    if any(c in uri for c in "<>,"):
        raise HeaderInjectionError(field, uri, "contains '<', '>' or ','; percent-encode them")
    return uri


def _body(content: str) -> str:
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded CRLF lines) for a normalised body."""
    data = text.replace("\n", "\r\n").encode("utf-8")
    # binascii's C encoder is the fast path; it keeps our CRLFs and encodes trailing blanks.
    qp = binascii.b2a_qp(data, istext=True)
    if len(qp) > -(-len(data) // 57) * 78:  # base64 is shorter: 57 octets per 76+2 characters
        return b"base64", base64.encodebytes(data).replace(b"\n", b"\r\n")
    qp = qp.replace(b"\r\nFrom ", b"\r\n=46rom ")
    return b"quoted-printable", b"=46" + qp[1:] if qp.startswith(b"From ") else qp


@dataclass(frozen=True)
class _Checked:
    """MessageParts after every check, normalised; shared by both builders."""

    to_name: str
    to_addr: str
    subject: str
    message_id: str
    date: datetime
    reply_to: str | None
    unsubscribe: str | None
    one_click: bool
    extra: tuple[tuple[str, str], ...]
    text: str
    html: str


def _check(parts: MessageParts) -> _Checked:
    to_name, to_addr = _mailbox("To", parts.to_name, parts.to_addr)
    message_id = check_header_value("Message-ID", parts.message_id)
    if not _MESSAGE_ID.fullmatch(message_id) or len(message_id) > 250:
        raise HeaderInjectionError("Message-ID", message_id, "is not '<left@right>'")
    date = parts.date
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("MessageParts.date must be timezone-aware")
    if date.utcoffset() % timedelta(minutes=1):  # RFC 5322 zones have no seconds
        date = date.astimezone(UTC)
    if parts.unsubscribe_mailto and not parts.unsubscribe_url:
        raise ValueError("unsubscribe_mailto needs unsubscribe_url: one-click needs https")
    unsubscribe = None
    one_click = False
    if parts.unsubscribe_url:
        # RFC 8058 one-click is defined for https only; a plain-http base URL (the embedded
        # mode on 127.0.0.1) still gets List-Unsubscribe, just without List-Unsubscribe-Post.
        one_click = parts.unsubscribe_url.startswith("https://")
        scheme = "https://" if one_click else "http://"
        unsubscribe = f"<{_checked_uri('List-Unsubscribe', parts.unsubscribe_url, scheme)}>"
        if parts.unsubscribe_mailto:
            mailto = _checked_uri("List-Unsubscribe", parts.unsubscribe_mailto, "mailto:")
            unsubscribe += f", <{mailto}>"
    return _Checked(
        to_name=to_name,
        to_addr=to_addr,
        subject=check_header_value("Subject", parts.subject),
        message_id=message_id,
        date=date.replace(microsecond=0),
        reply_to=ascii_address("Reply-To", parts.reply_to) if parts.reply_to else None,
        unsubscribe=unsubscribe,
        one_click=one_click,
        extra=_checked_extra(parts.extra_headers),
        text=_body(parts.text),
        html=_body(parts.html),
    )


class MessageSkeleton:
    """Constant parts of one template version's messages, encoded once."""

    def __init__(
        self,
        *,
        from_addr: str,
        from_name: str,
        list_id: str | None = None,
        feedback_id: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.from_name, self.from_addr = _mailbox("From", from_name, from_addr)
        self.list_id: str | None = None
        self.list_name = ""
        if list_id:
            # "Description <id>" or a bare id; the id must be a plain dot-atom.
            name, _, ident = check_header_value("List-Id", list_id).rpartition("<")
            ident = ident.removesuffix(">")
            if not _LIST_ID.fullmatch(ident):
                raise HeaderInjectionError("List-Id", list_id, "is not 'Name <id.domain>'")
            self.list_id, self.list_name = ident, display_name(name)
        if feedback_id is not None and not _VCHAR.fullmatch(
            check_header_value("Feedback-ID", feedback_id)
        ):
            raise HeaderInjectionError("Feedback-ID", feedback_id, "is not visible ASCII")
        self.feedback_id = feedback_id
        self.extra_headers = _checked_extra(extra_headers)
        self._from = encode_mailbox("From", self.from_name, self.from_addr)
        tail: list[bytes] = []
        if self.list_id:
            phrase = encode_phrase(self.list_name, 69)  # room after "List-Id: "
            tail.append(fold_header("List-Id", [*phrase, f"<{self.list_id}>"]))
        if feedback_id:
            tail.append(fold_header("Feedback-ID", [feedback_id]))
        # Our mail is bulk: keep Exchange out-of-office and auto-replies away.
        tail.append(b"X-Auto-Response-Suppress: OOF, AutoReply\r\n")
        tail.extend(encode_unstructured(n, v) for n, v in self.extra_headers)
        self._tail = b"".join(tail)

    def build(self, parts: MessageParts) -> bytes:
        """A complete RFC 5322 message for one recipient, CRLF line endings."""
        c = _check(parts)
        out = [
            f"Date: {format_datetime(c.date)}\r\n".encode("ascii"),
            self._from,
            encode_mailbox("To", c.to_name, c.to_addr),
            encode_unstructured("Subject", c.subject),
            f"Message-ID: {c.message_id}\r\n".encode("ascii"),
        ]
        if c.reply_to:
            out.append(f"Reply-To: {c.reply_to}\r\n".encode("ascii"))
        out.append(b"MIME-Version: 1.0\r\n")
        if c.unsubscribe:
            out.append(fold_header("List-Unsubscribe", c.unsubscribe.split(" ")))
            if c.one_click:
                out.append(f"List-Unsubscribe-Post: {ONE_CLICK}\r\n".encode("ascii"))
        out.append(self._tail)
        out.extend(encode_unstructured(n, v) for n, v in c.extra)
        # "=_" cannot occur in quoted-printable or base64 output, so no body line can match the
        # boundary; the random part keeps nested or forwarded copies apart.
        boundary = b"=_" + secrets.token_hex(12).encode("ascii")
        out.append(b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n')
        for subtype, content in ((b"plain", c.text), (b"html", c.html)):
            cte, body = _encode_body(content)
            out.append(b"\r\n--" + boundary + b"\r\nContent-Type: text/" + subtype)
            out.append(b"; charset=utf-8\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n")
            out.append(body)
        out.append(b"\r\n--" + boundary + b"--\r\n")
        return b"".join(out)


def build_reference(skeleton_args: dict, parts: MessageParts) -> EmailMessage:
    """The same message built with the stdlib EmailMessage API: the oracle for equivalence tests."""
    skeleton = MessageSkeleton(**skeleton_args)
    c = _check(parts)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Date"] = c.date
    msg["From"] = Address(skeleton.from_name, addr_spec=skeleton.from_addr)
    msg["To"] = Address(c.to_name, addr_spec=c.to_addr)
    msg["Subject"] = c.subject
    msg["Message-ID"] = c.message_id
    if c.reply_to:
        msg["Reply-To"] = c.reply_to
    msg["MIME-Version"] = "1.0"
    if c.unsubscribe:
        msg["List-Unsubscribe"] = c.unsubscribe
        if c.one_click:
            msg["List-Unsubscribe-Post"] = ONE_CLICK
    if skeleton.list_id:
        msg["List-Id"] = f"{skeleton.list_name} <{skeleton.list_id}>".lstrip()
    if skeleton.feedback_id:
        msg["Feedback-ID"] = skeleton.feedback_id
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    for name, value in (*skeleton.extra_headers, *c.extra):
        msg[name] = value
    msg.set_content(c.text)
    msg.add_alternative(c.html, subtype="html")
    return msg

"""Header values: checks that refuse injection, and the encoders the fast builder uses.

Python 3.11.7 has CVE-2024-6923: ``EmailMessage`` refuses a raw CR/LF in a header value but
serialises a *decoded* encoded word such as ``=?utf-8?q?Hi=0D=0ABcc:_x@example.org?=`` as a real
``Bcc:`` header. Every value is therefore checked as given and after decoding encoded words.

The encoders (RFC 2047 encoded words, RFC 5322 folding) emit ASCII header lines of at most 78
characters unless a single token is longer; they expect values that passed the checks.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import re
from collections.abc import Sequence
from email.base64mime import header_encode as b_encode
from email.header import ecre
from email.quoprimime import header_check, header_decode
from email.quoprimime import header_encode as q_encode

import idna

__all__ = [
    "HeaderInjectionError",
    "ascii_address",
    "check_address",
    "check_header_value",
    "clean_header_text",
    "decode_encoded_words",
    "display_name",
    "encode_mailbox",
    "encode_phrase",
    "encode_unstructured",
    "encoded_words",
    "fold_header",
]

# Line breaks include what str.splitlines() honours (VT, FF, FS, GS, RS, NEL, LS, PS): the
# stdlib's header folder splits on those, so each could start a new header line.
_LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# C0 controls except TAB (a legal WSP in headers), plus DEL: nothing legitimate needs them.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# For display: any control (TAB and C1 included) with its surrounding whitespace becomes one space.
_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u2028\u2029]+\s*")
# Letters are Unicode on purpose: check_address accepts them so the builder can explain SMTPUTF8.
_ATEXT = r"(?:[^\W_]|[!#$%&'*+\-/=?^_`{|}~])+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[^\W_]+(?:-+[^\W_]+)*"  # letters/digits, inner hyphens
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS_SPECIAL = re.compile(r'[\s<>,;:"()\[\]\\]')
_MAX_ADDRESS = 320
MAX_LINE = 78
_EW_MAX = 75  # RFC 2047 §2: an encoded word is at most 75 characters
_EW_OVERHEAD = len("=?utf-8?q??=")
_ASCII_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_PRINTABLE = re.compile(r"[ -~]*")
_Q_COST = [1 if b == 0x20 or not header_check(b) else 3 for b in range(128)]
_Q_LITERAL = bytes(b for b in range(128) if _Q_COST[b] == 1)
# An encoded word may decode to another encoded word; receivers never go this deep, we do.
_MAX_DECODE_ROUNDS = 4


class HeaderInjectionError(ValueError):
    """A header value that could add or alter header lines, or is not a plain value."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        super().__init__(f"Header {field} {problem}; refused.")
        self.field = field
        self.value = value


def _decode_word(match: re.Match[str]) -> str | None:
    """One encoded word as text, or None when it is malformed (then it stays literal)."""
    charset = match["charset"].split("*", 1)[0] or "us-ascii"  # drop an RFC 2231 language
    encoded = match["encoded"]
    try:
        if match["encoding"] in "qQ":
            data = header_decode(encoded).encode("latin-1", "replace")
        else:
            # Receivers tolerate missing padding, so we must decode what they would.
            data = base64.b64decode(encoded + "===")
    except (binascii.Error, ValueError):
        return None
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown charset, or a codec without "replace" (idna)
        return data.decode("utf-8", "replace")


def decode_encoded_words(value: str) -> str:
    """Decode RFC 2047 encoded words anywhere in value, leaving malformed ones as they are."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pos = 0
    after_word = False
    for match in ecre.finditer(value):
        between = value[pos : match.start()]
        # RFC 2047 §6.2: whitespace between two adjacent encoded words is not part of the text.
        if not (after_word and not between.strip(" \t\r\n")):
            out.append(between)
        decoded = _decode_word(match)
        out.append(match.group(0) if decoded is None else decoded)
        after_word = decoded is not None
        pos = match.end()
    out.append(value[pos:])
    return "".join(out)


def _refuse_controls(field: str, value: str, checked: str, where: str) -> None:
    if _FORBIDDEN.search(checked):
        what = "a line break" if _LINE_BREAK.search(checked) else "a control character"
        raise HeaderInjectionError(field, value, f"contains {what}{where}")


def check_header_value(field: str, value: str) -> str:
    """Return value unchanged, or raise HeaderInjectionError for CR/LF/controls, even encoded."""
    _refuse_controls(field, value, value, "")
    if "=?" not in value:
        return value
    decoded = value
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded, previous = decode_encoded_words(decoded), decoded
        _refuse_controls(field, value, decoded, " after decoding")
        if decoded == previous or "=?" not in decoded:
            break
    # The vulnerable serialiser decodes with the stdlib's own parser; check what it sees, too.
    try:
        parsed = str(email.policy.default.header_factory("x-nurture-check", value))
    except Exception:  # a value it cannot parse is one it will not decode either
        parsed = ""
    _refuse_controls(field, value, parsed, " after decoding")
    return value


def check_address(field: str, address: str) -> str:
    """Return a plain addr-spec (local@domain) unchanged, or raise HeaderInjectionError."""
    check_header_value(field, address)
    problem = None
    if len(address) > _MAX_ADDRESS:
        problem = f"longer than {_MAX_ADDRESS} characters"
    elif address.count("@") != 1:
        problem = "not exactly one '@'"
    elif "=?" in address:
        # Python's address parser decodes encoded words even inside a local part.
        problem = "an encoded word"
    else:
        local, domain = address.split("@")
        if special := _ADDRESS_SPECIAL.search(address):
            problem = f"{special.group()!r}, which is special in address headers"
        elif not _LOCAL_PART.fullmatch(local):
            problem = "an invalid local part"
        elif not _DOMAIN.fullmatch(domain):
            problem = "an invalid domain"
    if problem is not None:
        raise HeaderInjectionError(field, address, f"address is not a plain addr-spec ({problem})")
    return address


def clean_header_text(value: str) -> str:
    """Decode encoded words in inbound header text; each control/line-break run becomes a space."""
    try:
        text = decode_encoded_words(value)
    except Exception:  # inbound mail is hostile; cleaning must never fail
        text = value
    return _CONTROL_RUN.sub(" ", text).strip()


def encoded_words(text: str, first_max: int = _EW_MAX) -> list[str]:
    """text as UTF-8 encoded words (q or b, whichever is shorter), split between characters."""
    data = text.encode("utf-8")
    q_len = len(data) + 2 * len(data.translate(None, _Q_LITERAL))
    b_len = 4 * -(-len(data) // 3)
    use_q = q_len <= b_len
    if min(q_len, b_len) <= first_max - _EW_OVERHEAD:  # the common case: one word
        return [(q_encode if use_q else b_encode)(data, "utf-8")] if data else []
    limit, chunks, start, nbytes, cost = first_max - _EW_OVERHEAD, [], 0, 0, 0
    for i, ch in enumerate(text):
        o = ord(ch)
        n = 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
        c = _Q_COST[o] if o < 0x80 else 3 * n
        if (cost + c if use_q else 4 * -(-(nbytes + n) // 3)) > limit and i > start:
            chunks.append(text[start:i])
            start, nbytes, cost, limit = i, 0, 0, _EW_MAX - _EW_OVERHEAD
        nbytes, cost = nbytes + n, cost + c
    chunks.append(text[start:])
    encode = q_encode if use_q else b_encode
    return [encode(chunk.encode("utf-8"), "utf-8") for chunk in chunks if chunk]


def fold_header(name: str, pieces: Sequence[str]) -> bytes:
    """'Name: piece piece …' with a fold before a space wherever the line would exceed 78."""
    lines, line = [], f"{name}:"
    for i, piece in enumerate(pieces):
        if i and len(line) + 1 + len(piece) > MAX_LINE:
            lines.append(line)
            line = ""
        line = f"{line} {piece}"
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def encode_unstructured(name: str, value: str) -> bytes:
    """An unstructured header (Subject, extras); encoded words unless plain printable ASCII."""
    words = value.split(" ")
    room = MAX_LINE - len(name) - 2
    # Encoded-word look-alikes, edge or double spaces, and over-long words cannot go raw: the
    # first would be decoded by receivers, the others are lost or unfoldable.
    if (
        _PRINTABLE.fullmatch(value)
        and "=?" not in value
        and "" not in words
        and len(words[0]) <= room
        and max(map(len, words)) < MAX_LINE
    ):
        return fold_header(name, words)
    return fold_header(name, encoded_words(value, max(room, 20)))


def display_name(name: str) -> str:
    """A display name with each whitespace run made one space and the ends stripped."""
    # Python's address parser collapses whitespace runs that contain Unicode spaces (NBSP) to
    # one space; collapsing them ourselves gives every receiver the same name.
    return " ".join(name.split())


def encode_phrase(name: str, first_max: int) -> list[str]:
    """Pieces of an RFC 5322 phrase for an already normalised display name."""
    if not name:
        return []
    words = name.split(" ")
    if _PRINTABLE.fullmatch(name) and "=?" not in name:
        if all(_ASCII_ATOM.fullmatch(w) for w in words):
            return words
        return ('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"').split(" ")
    # Only runs of words that need it are encoded, each run as a whole: whitespace between two
    # encoded words is dropped by decoders, but not between an encoded word and an atom.
    pieces: list[str] = []
    run: list[str] = []
    for word in words:
        if _ASCII_ATOM.fullmatch(word) and "=?" not in word:
            if run:
                pieces += encoded_words(" ".join(run), _EW_MAX if pieces else first_max)
                run = []
            pieces.append(word)
        else:
            run.append(word)
    if run:
        pieces += encoded_words(" ".join(run), _EW_MAX if pieces else first_max)
    return pieces


def ascii_address(field: str, address: str) -> str:
    """addr-spec checked and with an IDNA domain; a non-ASCII local part needs SMTPUTF8."""
    local, domain = check_address(field, address).split("@")
    if not local.isascii():
        raise ValueError(
            f"{field} address {address!r} has a non-ASCII local part, which needs SMTPUTF8; "
            "nurture does not support SMTPUTF8 yet"
        )
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise HeaderInjectionError(field, address, f"has an invalid domain ({exc})") from exc
    return f"{local}@{domain}"


def encode_mailbox(field: str, name: str, address: str) -> bytes:
    """'Field: phrase <address>' for a normalised name and an ASCII address, folded."""
    phrase = encode_phrase(name, MAX_LINE - len(field) - 2)
    return fold_header(field, [*phrase, f"<{address}>"] if phrase else [address])

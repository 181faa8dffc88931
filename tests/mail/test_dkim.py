"""DKIM: built messages verify, and h= covers both one-click unsubscribe headers (RFC 8058)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest

from nurture.mail.dkim import DkimSigner
from nurture.mail.message import MessageParts, MessageSkeleton

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

SELECTOR, DOMAIN = "nurture2025", "example.org"


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    """A fresh RSA 2048 key; OpenSSL 3 writes PKCS#8 ("BEGIN PRIVATE KEY")."""
    return _openssl("genrsa", "2048")


@pytest.fixture(scope="module")
def dns(key_pem: bytes) -> Callable[..., bytes | None]:
    """A dnsfunc for dkim.verify answering only our selector's TXT record."""
    public_der = _openssl("rsa", "-pubout", "-outform", "DER", stdin=key_pem)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    queried: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        queried.append(name)
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    dnsfunc.queried = queried  # type: ignore[attr-defined]
    return dnsfunc


@pytest.fixture(scope="module")
def signer(key_pem: bytes) -> DkimSigner:
    return DkimSigner(selector=SELECTOR, domain=DOMAIN, private_key_pem=key_pem)


def _message(**changes: object) -> bytes:
    skeleton = MessageSkeleton(
        from_addr=f"news@{DOMAIN}",
        from_name="Müller, Hans",
        list_id=f"Newsletter <news.{DOMAIN}>",
        feedback_id="c1:t2:nurture:news",
    )
    parts = {
        "to_addr": "kunde@example.com",
        "to_name": "Jürgen Beispiel",
        "subject": "Ihr Frühlingsrabatt",
        "html": "<p>Hallo Jürgen</p>\n" * 20,
        "text": "Hallo Jürgen\nFrom here\n.\n",
        "message_id": f"<m1.abc@{DOMAIN}>",
        "date": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        "unsubscribe_url": f"https://{DOMAIN}/u/tok",
        "unsubscribe_mailto": f"mailto:unsubscribe+tok@{DOMAIN}",
    }
    return skeleton.build(MessageParts(**{**parts, **changes}))  # type: ignore[arg-type]


def _signed_tags(signed: bytes) -> dict[str, str]:
    header = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", signed, re.S)
    assert header is not None, "the signature must be the first header"
    value = re.sub(r"\s+", "", header.group(1).decode("ascii"))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_signed_message_verifies(signer: DkimSigner, dns) -> None:
    raw = _message()
    signed = signer.sign(raw)
    assert signed.endswith(raw)
    assert dkim.verify(signed, dnsfunc=dns)
    assert dns.queried[-1] == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
    tags = _signed_tags(signed)
    assert (tags["d"], tags["s"], tags["c"], tags["a"]) == (
        DOMAIN,
        SELECTOR,
        "relaxed/simple",
        "rsa-sha256",
    )
    assert b"\n" not in signed.replace(b"\r\n", b"")  # CRLF only, also in the folded signature


def test_h_tag_covers_both_unsubscribe_headers(signer: DkimSigner) -> None:
    signed_headers = _signed_tags(signer.sign(_message()))["h"].split(":")
    assert "list-unsubscribe" in signed_headers
    assert "list-unsubscribe-post" in signed_headers
    assert signed_headers == [h.decode() for h in DkimSigner.SIGNED_HEADERS]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"List-Unsubscribe-Post: x\r\n"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
        (b"List-Unsubscribe: <https://example.org/u/tok>", b"List-Unsubscribe: <https://e.vil/u>"),
        (b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nReply-To: evil@example.net\r\n"),
        (b"Hallo J=C3=BCrgen\r\n", b"Hallo Evil\r\n"),
    ],
)
def test_tampering_after_signing_fails(signer: DkimSigner, dns, old: bytes, new: bytes) -> None:
    signed = signer.sign(_message())
    assert old in signed
    assert not dkim.verify(signed.replace(old, new, 1), dnsfunc=dns)


def test_message_without_unsubscribe_headers_verifies(signer: DkimSigner, dns) -> None:
    signed = signer.sign(_message(unsubscribe_url=None, unsubscribe_mailto=None))
    assert dkim.verify(signed, dnsfunc=dns)
    # They are signed as absent (RFC 6376 §5.4), so adding one later breaks the signature.
    forged = signed.replace(
        b"MIME-Version: 1.0\r\n",
        b"MIME-Version: 1.0\r\nList-Unsubscribe: <https://e.vil/u>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    )
    assert not dkim.verify(forged, dnsfunc=dns)


def test_from_file_accepts_pkcs1_and_crlf(key_pem: bytes, dns, tmp_path: Path) -> None:
    pkcs1 = _openssl("rsa", "-traditional", stdin=key_pem)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    path = tmp_path / "dkim.pem"
    path.write_bytes(pkcs1.replace(b"\n", b"\r\n"))
    signer = DkimSigner.from_file(selector=SELECTOR, domain=DOMAIN, path=path)
    assert dkim.verify(signer.sign(_message()), dnsfunc=dns)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"private_key_pem": b"not a key"},
        {"selector": "bad selector"},
        {"domain": "bücher.de"},
        {"domain": "example.org\r\nBcc: x"},
    ],
)
def test_bad_configuration_fails_at_start(key_pem: bytes, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DkimSigner(**{"selector": SELECTOR, "domain": DOMAIN, "private_key_pem": key_pem, **kwargs})

"""DKIM signing with dkimpy, covering both one-click unsubscribe headers (RFC 8058).

dkimpy's default header list leaves out List-Unsubscribe-Post, and mailbox providers only honour
one-click unsubscribe when the signature covers both headers, so the list is passed explicitly.
Signing is the last step: any header added or changed afterwards breaks the signature.

Every header in SIGNED_HEADERS is named in ``h=`` whether or not the message has it. RFC 6376
§5.4 signs an absent header as the empty string, so nobody on the way can add, say, a Reply-To
or a List-Unsubscribe-Post to a message that went out without one.
"""

from __future__ import annotations

import re
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

__all__ = ["DkimSigner"]

_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9_-]+)*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+")


class DkimSigner:
    """Signs built messages for one selector and domain (relaxed header, simple body)."""

    SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to",
                      b"mime-version", b"content-type", b"list-unsubscribe",
                      b"list-unsubscribe-post", b"list-id", b"feedback-id")  # fmt: skip
    # Relaxed headers survive refolding by relays; a simple body is fine because our bodies are
    # 7-bit with short CRLF lines, which relays have no reason to touch.
    CANONICALIZE = (b"relaxed", b"simple")

    def __init__(self, *, selector: str, domain: str, private_key_pem: bytes) -> None:
        if not _SELECTOR.fullmatch(selector):
            raise ValueError(f"DKIM selector {selector!r} is not a DNS label sequence")
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"DKIM domain {domain!r} is not an ASCII domain name (use IDNA)")
        # dkimpy's PEM reader only finds "\n"-separated blocks; keys saved on Windows have CRLF.
        key = private_key_pem.replace(b"\r\n", b"\n").strip() + b"\n"
        try:
            parse_pem_private_key(key)  # fail at start-up, not on the first message
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise ValueError(f"DKIM private key is not an RSA key in PEM form: {exc}") from exc
        self.selector = selector
        self.domain = domain
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        self._key = key

    @classmethod
    def from_file(cls, *, selector: str, domain: str, path: Path) -> DkimSigner:
        """A signer whose PEM private key is read from path."""
        return cls(selector=selector, domain=domain, private_key_pem=Path(path).read_bytes())

    def sign(self, raw: bytes) -> bytes:
        """Return raw with a DKIM-Signature header prepended."""
        signature = dkim.sign(
            raw,
            self._selector,
            self._domain,
            self._key,
            canonicalize=self.CANONICALIZE,
            include_headers=list(self.SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return signature + raw

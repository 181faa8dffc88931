"""Addresses and links that map a mail back to its outbox row, without exposing ids."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

TOKEN_BYTES = 16


def new_token() -> str:
    """A random, URL- and local-part-safe message token (128 bits)."""
    # Lower-case hex: survives case-folding mail servers and needs no quoting in addresses.
    return secrets.token_hex(TOKEN_BYTES)


def message_id_header(token: str, domain: str) -> str:
    """The Message-ID: stable across retries because the token is stored with the row."""
    return f"<{token}@{domain}>"


def return_path(token: str, domain: str) -> str:
    """VERP envelope sender: a bounce names its message even when its body is useless."""
    return f"bounces+{token}@{domain}"


def reply_address(token: str, domain: str) -> str:
    return f"reply+{token}@{domain}"


def unsubscribe_mailto(token: str, domain: str) -> str:
    return f"mailto:unsubscribe+{token}@{domain}?subject=unsubscribe"


def confirmation_token(secret: str, message_token: str) -> str:
    """The double-opt-in link token of a confirmation mail, derived when the mail is built.

    Neither it nor its input secret is stored: the request keeps only its sha256 and the outbox
    row only the message token, so whoever reads the database cannot confirm in anyone's name.
    """
    digest = hmac.new(secret.encode(), f"optin:{message_token}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class LinkSigner:
    """Signed, opaque, non-expiring link tokens: an objection must work at any time."""

    def __init__(self, secret: str, base_url: str) -> None:
        self._base_url = base_url.rstrip("/")
        self._serializers = {
            purpose: URLSafeSerializer(secret, salt=f"nurture.link.{purpose}")
            for purpose in ("unsubscribe", "preferences", "view")
        }

    def sign(self, purpose: str, message_token: str) -> str:
        return self._serializers[purpose].dumps(message_token)

    def load(self, purpose: str, signed: str) -> str | None:
        """The message token inside ``signed``, or None when forged or for another purpose."""
        try:
            value = self._serializers[purpose].loads(signed)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def unsubscribe_url(self, message_token: str) -> str:
        return f"{self._base_url}/u/{self.sign('unsubscribe', message_token)}"

    def preferences_url(self, message_token: str) -> str:
        return f"{self._base_url}/p/{self.sign('preferences', message_token)}"

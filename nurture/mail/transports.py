"""Transports: where a built message goes. Capture keeps it; SMTP sends it.

The delivery pipeline depends only on ``Transport.connect()`` and ``Connection.send()``; a
connection is used by one thread for a batch, so SMTP sessions are reused across messages.
"""

from __future__ import annotations

import contextlib
import enum
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nurture.config import SmtpSettings
from nurture.db import Database
from nurture.mail.models import CapturedMail


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


class BounceKind(enum.StrEnum):
    HARD = "hard"  # the address does not exist: suppress it
    SOFT = "soft"  # temporary (mailbox full, greylisting): count, retry
    POLICY = "policy"  # our problem (reputation, authentication): never blame the recipient


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    code: int | None = None
    text: str = ""
    enhanced: str | None = None
    bounce: BounceKind | None = None


SENT_OK = SendResult(Outcome.SENT, 250, "captured")
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify_smtp_reply(code: int, text: str) -> SendResult:
    """Map an SMTP reply to an outcome; the enhanced status decides, not the class digit.

    RFC 3463: X.1.1/X.1.2/X.1.6 mean the address is gone even when sent as 4.x; X.2.2 (mailbox
    full) is temporary even when sent as 5.2.2; X.7.x is policy and says nothing about the
    recipient.
    """
    match = _ENHANCED.search(text)
    enhanced = match.group(0) if match else None
    subject, detail = (match.group(2), match.group(3)) if match else (None, None)
    if 200 <= code < 300:
        return SendResult(Outcome.SENT, code, text, enhanced)
    if subject == "1" and detail in ("1", "2", "6"):
        return SendResult(Outcome.FAILED, code, text, enhanced, BounceKind.HARD)
    if subject == "2" and detail == "2":
        return SendResult(Outcome.RETRY, code, text, enhanced, BounceKind.SOFT)
    if subject == "7":
        outcome = Outcome.RETRY if code < 500 else Outcome.FAILED
        return SendResult(outcome, code, text, enhanced, BounceKind.POLICY)
    if 400 <= code < 500:
        return SendResult(Outcome.RETRY, code, text, enhanced, BounceKind.SOFT)
    return SendResult(Outcome.FAILED, code, text, enhanced, BounceKind.HARD)


class Connection(Protocol):
    def send(
        self, sender: str, recipients: list[str], raw: bytes, *, message_id: int | None = None
    ) -> SendResult:
        """Hand one message over; never raises for the recipient's or the server's answer."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    name: str

    def connect(self) -> Connection: ...


# -- capture ------------------------------------------------------------------------------------


class CaptureConnection:
    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now

    def send(
        self, sender: str, recipients: list[str], raw: bytes, *, message_id: int | None = None
    ) -> SendResult:
        subject = _header(raw, b"subject")
        with self._db.session_scope() as session:
            session.add(
                CapturedMail(
                    message_id=message_id,
                    envelope_from=sender,
                    recipients=list(recipients),
                    subject=subject,
                    raw=raw,
                    captured_at=self._now(),
                )
            )
        return SENT_OK

    def close(self) -> None:
        return None


class CaptureTransport:
    """Keeps every message in the database; the Mailbox page shows them."""

    name = "capture"

    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now

    def connect(self) -> CaptureConnection:
        return CaptureConnection(self._db, self._now)


def _header(raw: bytes, name: bytes) -> str:
    """A header's decoded value from raw bytes, without parsing the whole message."""
    from email.header import decode_header, make_header

    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    for index, line in enumerate(lines):
        if line.lower().startswith(name + b":"):
            value = line.split(b":", 1)[1]
            for continuation in lines[index + 1 :]:
                if not continuation[:1].isspace():
                    break
                value += continuation
            text = value.decode("ascii", "replace").strip()
            try:
                return str(make_header(decode_header(text)))
            except Exception:
                return text
    return ""


# -- SMTP ---------------------------------------------------------------------------------------


class SmtpConnection:
    """One SMTP session, reused for many messages; reconnects after the server drops it."""

    def __init__(self, settings: SmtpSettings, local_hostname: str | None = None) -> None:
        self._settings = settings
        self._local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None

    def _open(self) -> smtplib.SMTP:
        s = self._settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host,
                s.port,
                timeout=s.timeout,
                context=context,
                local_hostname=self._local_hostname,
            )
        else:
            smtp = smtplib.SMTP(
                s.host, s.port, timeout=s.timeout, local_hostname=self._local_hostname
            )
            if s.starttls:
                smtp.starttls(context=context)
        if s.username:
            smtp.login(s.username, s.password or "")
        return smtp

    def send(
        self, sender: str, recipients: list[str], raw: bytes, *, message_id: int | None = None
    ) -> SendResult:
        try:
            if self._smtp is None:
                self._smtp = self._open()
            refused = self._smtp.sendmail(sender, recipients, raw)
        except smtplib.SMTPAuthenticationError as exc:
            # Our credentials are wrong: an operator's problem, never the recipient's.
            self._reset()
            return SendResult(
                Outcome.RETRY,
                exc.smtp_code,
                f"SMTP login refused: {_text(exc.smtp_error)}",
                bounce=BounceKind.POLICY,
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return classify_smtp_reply(code, _text(text))
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused and SMTPDataError land here; the session may be unusable.
            self._reset()
            return classify_smtp_reply(exc.smtp_code, _text(exc.smtp_error))
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            # Connection trouble says nothing about the recipient: retry later.
            self._reset()
            return SendResult(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")
        if refused:
            code, text = next(iter(refused.values()))
            return classify_smtp_reply(code, _text(text))
        return SendResult(Outcome.SENT, 250, "accepted")

    def _reset(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._reset()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    def connect(self) -> SmtpConnection:
        return SmtpConnection(self._settings)


def make_transport(
    kind: str, *, smtp: SmtpSettings | None, db: Database, now: Callable[[], datetime]
) -> Transport:
    """The configured transport."""
    if kind == "smtp":
        assert smtp is not None, "settings validation requires NURTURE_SMTP_URL for smtp"
        return SmtpTransport(smtp)
    return CaptureTransport(db, now)

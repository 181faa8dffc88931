import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller

from nurture.config import parse_smtp_url
from nurture.mail.transports import (
    BounceKind,
    Outcome,
    SmtpConnection,
    classify_smtp_reply,
)
from tests.mail.conftest import SinkHandler, SmtpSink, free_port

RAW = (
    b"From: news@nurture.example\r\nTo: anna@kunde.example\r\nSubject: Hallo\r\n"
    b"Message-ID: <t1@nurture.example>\r\n\r\nHallo Anna\r\n"
)


@pytest.mark.parametrize(
    ("code", "text", "outcome", "bounce"),
    [
        (250, "2.0.0 OK", Outcome.SENT, None),
        (550, "5.1.1 user unknown", Outcome.FAILED, BounceKind.HARD),
        (450, "4.1.1 user unknown (temporarily)", Outcome.FAILED, BounceKind.HARD),
        (553, "5.1.2 no such domain", Outcome.FAILED, BounceKind.HARD),
        (550, "5.1.6 mailbox moved", Outcome.FAILED, BounceKind.HARD),
        (552, "5.2.2 mailbox full", Outcome.RETRY, BounceKind.SOFT),
        (452, "4.2.2 mailbox full", Outcome.RETRY, BounceKind.SOFT),
        (421, "4.4.7 try later", Outcome.RETRY, BounceKind.SOFT),
        (451, "greylisted, come back later", Outcome.RETRY, BounceKind.SOFT),
        (550, "5.7.1 rejected as spam", Outcome.FAILED, BounceKind.POLICY),
        (550, "5.7.26 unauthenticated mail", Outcome.FAILED, BounceKind.POLICY),
        (
            550,
            "5.7.515 access denied, sending domain does not meet authentication",
            Outcome.FAILED,
            BounceKind.POLICY,
        ),
        (554, "transaction failed", Outcome.FAILED, BounceKind.HARD),
    ],
)
def test_smtp_replies_are_classified_by_their_enhanced_status(
    code: int, text: str, outcome: Outcome, bounce: BounceKind | None
) -> None:
    result = classify_smtp_reply(code, text)
    assert (result.outcome, result.bounce) == (outcome, bounce)


def test_smtp_connection_delivers_and_is_reused(smtp_sink: SmtpSink) -> None:
    connection = SmtpConnection(parse_smtp_url(smtp_sink.url + "?timeout=5"))
    try:
        first = connection.send("bounces+t1@nurture.example", ["anna@kunde.example"], RAW)
        smtp = connection._smtp
        second = connection.send("bounces+t2@nurture.example", ["ben@kunde.example"], RAW)
        assert connection._smtp is smtp  # the same SMTP session carried both
    finally:
        connection.close()
    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert [r.mail_from for r in smtp_sink.received] == [
        "bounces+t1@nurture.example",
        "bounces+t2@nurture.example",
    ]
    assert smtp_sink.received[0].message["Subject"] == "Hallo"


def test_smtp_connection_logs_in(smtp_sink: SmtpSink) -> None:
    settings = parse_smtp_url(f"smtp://mailer:s3cret@127.0.0.1:{smtp_sink.port}")
    connection = SmtpConnection(settings)
    assert connection.send("b@nurture.example", ["anna@kunde.example"], RAW).outcome == Outcome.SENT
    connection.close()
    url = f"smtp://mailer:nope@127.0.0.1:{smtp_sink.port}?timeout=3"
    wrong = SmtpConnection(parse_smtp_url(url))
    result = wrong.send("b@nurture.example", ["anna@kunde.example"], RAW)
    wrong.close()
    # Wrong credentials are our problem, not the recipient's: retried, never failed.
    assert result.outcome == Outcome.RETRY
    assert len(smtp_sink.received) == 1


def test_rejected_recipients_are_classified(smtp_sink: SmtpSink) -> None:
    connection = SmtpConnection(parse_smtp_url(smtp_sink.url))
    hard = connection.send("b@nurture.example", ["hard-x@kunde.example"], RAW)
    full = connection.send("b@nurture.example", ["full-x@kunde.example"], RAW)
    policy = connection.send("b@nurture.example", ["policy-x@kunde.example"], RAW)
    ok = connection.send("b@nurture.example", ["ok@kunde.example"], RAW)
    connection.close()
    assert (hard.outcome, hard.bounce, hard.enhanced) == (Outcome.FAILED, BounceKind.HARD, "5.1.1")
    assert "user unknown" in hard.text
    assert (full.outcome, full.bounce) == (Outcome.RETRY, BounceKind.SOFT)
    assert (policy.outcome, policy.bounce) == (Outcome.FAILED, BounceKind.POLICY)
    # The session survived the refusals and delivered the next message.
    assert ok.outcome == Outcome.SENT
    assert [r.rcpt_tos for r in smtp_sink.received] == [["ok@kunde.example"]]


def test_unreachable_server_is_a_retry() -> None:
    connection = SmtpConnection(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}?timeout=2"))
    result = connection.send("b@nurture.example", ["anna@kunde.example"], RAW)
    assert result.outcome == Outcome.RETRY
    assert result.code is None
    assert "ConnectionRefusedError" in result.text


@pytest.fixture
def certificate(tmp_path):  # type: ignore[no-untyped-def]
    """A self-signed certificate for 127.0.0.1, standing in for a relay's private CA."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _tls_sink(certificate, *, implicit: bool):  # type: ignore[no-untyped-def]
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = SinkHandler()
    port = free_port()
    options = (
        {"ssl_context": context} if implicit else {"tls_context": context, "require_starttls": True}
    )
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False, **options)
    controller.start()
    return controller, handler, port


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_tls_to_a_relay_with_a_private_ca(certificate, implicit: bool) -> None:  # type: ignore[no-untyped-def]
    controller, handler, port = _tls_sink(certificate, implicit=implicit)
    cert, _key = certificate
    scheme = "smtps" if implicit else "smtp"
    tls = "" if implicit else "&starttls=1"
    try:
        trusted = SmtpConnection(parse_smtp_url(f"{scheme}://127.0.0.1:{port}?cafile={cert}{tls}"))
        ok = trusted.send("b@nurture.example", ["anna@kunde.example"], RAW)
        trusted.close()
        # Without the CA the certificate is not trusted: nothing is sent in the clear instead.
        untrusted = SmtpConnection(parse_smtp_url(f"{scheme}://127.0.0.1:{port}?timeout=5{tls}"))
        refused = untrusted.send("b@nurture.example", ["anna@kunde.example"], RAW)
        untrusted.close()
    finally:
        controller.stop()
    assert ok.outcome == Outcome.SENT
    assert refused.outcome == Outcome.RETRY and "CERTIFICATE_VERIFY_FAILED" in refused.text
    assert len(handler.received) == 1

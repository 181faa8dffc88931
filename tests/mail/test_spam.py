"""SpamAssassin (offline, -L) scores every built-in mail and the default layout under 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from nurture.mail.message import MessageParts, MessageSkeleton
from nurture.mail.render import (
    BUILTINS,
    TemplateSource,
    compile_template,
    load_builtin,
    sample_context,
)

pytestmark = pytest.mark.slow
SCORE = re.compile(rb"^X-Spam-Status: \w+, score=(-?[\d.]+)", re.MULTILINE)
MARKETING = TemplateSource(
    subject="{{ contact.first_name }}, wir haben etwas für Sie",
    html=(
        "<h1>{{ salutation }},</h1>"
        "<p>schön, dass Sie Kundin bei uns sind. Seit Ihrer letzten Bestellung haben wir unser "
        "Sortiment erweitert und den Versand beschleunigt.</p>"
        "<p>Als Dankeschön erhalten Sie bei Ihrer nächsten Bestellung zehn Prozent Nachlass.</p>"
        '<p><a href="https://shop.example/neu">Neuheiten ansehen</a></p>'
        "<p>Mit freundlichen Grüßen<br>Ihr Team von {{ sender.name }}</p>"
    ),
)


def _score(raw: bytes) -> float:
    binary = shutil.which("spamassassin")
    if binary is None:
        pytest.fail("spamassassin is not installed; `make test` installs Debian's package")
    done = subprocess.run([binary, "-L", "-t"], input=raw, capture_output=True, timeout=120)
    match = SCORE.search(done.stdout)
    assert match, done.stdout[-2000:] + done.stderr[-2000:]
    return float(match.group(1))


def _build(source: TemplateSource, lang: str, *, marketing: bool) -> bytes:
    mail = compile_template(source).render(sample_context(lang=lang))
    skeleton = MessageSkeleton(
        from_addr="news@nurture-shop.de",
        from_name="Nurture Shop",
        list_id="<marketing.nurture-shop.de>" if marketing else None,
    )
    return skeleton.build(
        MessageParts(
            to_addr="anna.mueller@kunde-beispiel.de",
            to_name="Anna Müller",
            subject=mail.subject,
            html=mail.html,
            text=mail.text,
            message_id="<0123456789abcdef0123456789abcdef@nurture-shop.de>",
            date=datetime(2026, 3, 3, 9, 30, tzinfo=UTC),
            reply_to="reply+0123456789abcdef0123456789abcdef@nurture-shop.de",
            unsubscribe_url="https://nurture-shop.de/u/abc" if marketing else None,
            unsubscribe_mailto="mailto:unsubscribe+abc@nurture-shop.de" if marketing else None,
        )
    )


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_mails_score_low(name: str, lang: str) -> None:
    assert _score(_build(load_builtin(name), lang, marketing=False)) < 2.0


@pytest.mark.parametrize("lang", ["de", "en"])
def test_a_mail_in_the_default_layout_scores_low(lang: str) -> None:
    assert _score(_build(MARKETING, lang, marketing=True)) < 2.0


def test_the_scorer_does_notice_spam() -> None:
    # Guards the harness itself: a shouting, money-promising mail must score high.
    spam = TemplateSource(
        subject="FREE MONEY!!! ACT NOW!!! 100% GUARANTEED WINNER",
        html=(
            "<p>CLICK HERE NOW!!! YOU HAVE WON $1,000,000 CASH!!! 100% FREE, NO RISK, "
            "ACT NOW, LIMITED TIME, CREDIT CARD OFFERS, BUY DIRECT, VIAGRA, LOSE WEIGHT FAST, "
            "MILLIONS OF DOLLARS, DEAR FRIEND, THIS IS NOT SPAM!!!</p>"
        ),
        text="",
        layout=None,
    )
    assert _score(_build(spam, "en", marketing=False)) >= 2.0

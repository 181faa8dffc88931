"""The worker side of the outbox: claim due messages, render, build, send, record.

One ``Deliverer`` lives as long as its worker, so compiled templates and message skeletons are
built once per template version and reused for every recipient.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.consent.models import SuppressionReason
from nurture.consent.suppression import suppress
from nurture.mail import outbox
from nurture.mail.dkim import DkimSigner
from nurture.mail.gate import refusal
from nurture.mail.headers import HeaderInjectionError
from nurture.mail.identity import (
    LinkSigner,
    confirmation_token,
    message_id_header,
    reply_address,
    return_path,
    unsubscribe_mailto,
)
from nurture.mail.message import MessageParts, MessageSkeleton
from nurture.mail.models import Message, MessageState, Purpose, TemplateVersion
from nurture.mail.render import (
    CONFIRMING_BUILTINS,
    TemplateCache,
    TemplateError,
    TemplateSource,
    load_builtin,
)
from nurture.mail.templates import version_source
from nurture.mail.transports import (
    BounceKind,
    Connection,
    Outcome,
    Transport,
    make_transport,
)
from nurture.state import Nurture

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    postponed: int = 0
    recovered: int = 0
    cancelled_late: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class Deliverer:
    def __init__(
        self, state: Nurture, *, worker_id: str, transport: Transport | None = None
    ) -> None:
        self.state = state
        self.settings = state.settings
        self.worker_id = worker_id
        self.transport = transport or make_transport(
            self.settings.mail_transport,
            smtp=self.settings.smtp,
            db=state.db,
            now=state.clock.now,
        )
        self.templates = TemplateCache()
        self.links = LinkSigner(self.settings.secret_key, self.settings.base_url)
        self._skeletons: dict[Hashable, MessageSkeleton] = {}
        self._skeleton_lock = threading.Lock()
        self.dkim: DkimSigner | None = None
        if self.settings.dkim_key_file and self.settings.dkim_selector:
            self.dkim = DkimSigner.from_file(
                selector=self.settings.dkim_selector,
                domain=self.settings.dkim_domain or self.settings.mail_domain,
                path=self.settings.dkim_key_file,
            )
        self.lease = timedelta(seconds=self.settings.outbox_lease_seconds)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, budget_seconds: float = 30.0) -> DeliveryReport:
        """Send due messages batch by batch until none are due or the budget is spent."""
        report = DeliveryReport()
        started = time.monotonic()
        db, clock, settings = self.state.db, self.state.clock, self.settings
        with db.session_scope() as session:
            report.recovered = outbox.recover_expired(session, now=clock.now())
            report.cancelled_late = outbox.cancel_late(session, now=clock.now())
        while time.monotonic() - started < budget_seconds:
            with db.session_scope() as session:
                now = clock.now()
                room = outbox.capacity(session, settings, now=now)
                limit = settings.outbox_batch if room is None else min(settings.outbox_batch, room)
                if limit <= 0:
                    break
                ids = outbox.claim_batch(
                    session, worker_id=self.worker_id, now=now, limit=limit, lease=self.lease
                )
            if not ids:
                break
            report.claimed += len(ids)
            self.send_batch(ids, report)
            if len(ids) < limit:
                break
        return report

    def send_batch(self, ids: list[int], report: DeliveryReport) -> None:
        """Send claimed rows over up to ``smtp_connections`` connections in parallel."""
        lanes = max(1, min(self.settings.smtp_connections, len(ids)))
        chunks = [ids[i::lanes] for i in range(lanes)]
        if lanes == 1:
            self._send_chunk(chunks[0], report)
            return
        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="smtp") as pool:
            for future in [pool.submit(self._send_chunk, chunk, report) for chunk in chunks]:
                future.result()

    def _send_chunk(self, ids: list[int], report: DeliveryReport) -> None:
        connection = self.transport.connect()
        session = self.state.db.session()
        try:
            # Loaded after the claim committed, so these rows are current.
            messages = session.scalars(
                select(Message).where(Message.id.in_(ids)).order_by(Message.id)
            ).all()
            for message in messages:
                try:
                    self._send_one(session, connection, message, report)
                except Exception:
                    # Losing an uncommitted result here leaves that row `sending`, so it ends
                    # `uncertain`: shown to a person, never sent twice.
                    session.rollback()
                    log.exception("sending message %s failed unexpectedly", message.id)
            session.commit()
        finally:
            connection.close()
            session.close()

    # -- one message --------------------------------------------------------------------------
    def _send_one(
        self, session: Session, connection: Connection, message: Message, report: DeliveryReport
    ) -> None:
        """Gate, mark in flight, build, send, record. The record is committed together with the
        next message's start (one commit per message instead of two); nothing is on the wire
        between the two, so the guarantees are the same."""
        if message.state != MessageState.QUEUED or message.claimed_by != self.worker_id:
            return
        clock = self.state.clock
        now = clock.now()
        reason = refusal(session, message, now, self.settings)
        if reason:
            outbox.skip_claimed(
                session, message.id, worker_id=self.worker_id, reason=reason, now=now
            )
            report.count("skipped")
            return
        if not outbox.domain_has_room(session, self.settings, message.to_domain, now=now):
            outbox.postpone(
                session, message.id, worker_id=self.worker_id, until=now + timedelta(minutes=1)
            )
            report.count("postponed")
            return
        if not outbox.start_sending(
            session, message.id, worker_id=self.worker_id, now=now, lease=self.lease
        ):
            return
        # Committed before the SMTP conversation: if this process dies now, the row is
        # recognisably in flight and ends `uncertain`, never silently re-sent.
        session.commit()
        try:
            raw, subject = self.build(session, message)
        except (TemplateError, HeaderInjectionError, ValueError) as exc:
            outbox.fail_unbuildable(session, message, error=str(exc), now=clock.now())
            report.count("failed")
            return
        result = connection.send(
            return_path(message.token, self.settings.mail_domain),
            [message.to_addr],
            raw,
            message_id=message.id,
        )
        new_state = outbox.record_result(
            session,
            message,
            result,
            now=clock.now(),
            subject=subject,
            max_attempts=self.settings.smtp_max_attempts,
        )
        if result.outcome == Outcome.FAILED and result.bounce == BounceKind.HARD:
            # The address does not exist: never again, committed with the `bounced` event.
            suppress(
                session,
                secret=self.settings.suppression_secret,
                email=message.to_addr,
                reason=SuppressionReason.HARD_BOUNCE,
                now=clock.now(),
            )
        counter = {MessageState.SENT: "sent", MessageState.QUEUED: "retried"}
        report.count(counter.get(new_state, "failed"))

    # -- building ---------------------------------------------------------------------------------
    def build(self, session: Session, message: Message) -> tuple[bytes, str]:
        """The signed raw message and its rendered subject."""
        if message.template_version_id is not None:
            version_id = message.template_version_id
            key: Hashable = ("version", version_id)

            def load() -> TemplateSource:
                version = session.get(TemplateVersion, version_id)
                assert version is not None
                return version_source(version)
        else:
            assert message.builtin is not None
            key = ("builtin", message.builtin)
            builtin = message.builtin

            def load() -> TemplateSource:
                return load_builtin(builtin)

        compiled = self.templates.get(key, load)
        marketing = message.purpose == Purpose.MARKETING
        # Signed once per message: the template may print the links several times.
        unsubscribe_url = self.links.unsubscribe_url(message.token)
        rendered = compiled.render(self.context(message, unsubscribe_url=unsubscribe_url))
        skeleton = self._skeleton(key, message)
        domain = self.settings.mail_domain
        parts = MessageParts(
            to_addr=message.to_addr,
            to_name=message.to_name,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            message_id=message_id_header(message.token, domain),
            date=self.state.clock.now(),
            reply_to=reply_address(message.token, domain),
            unsubscribe_url=unsubscribe_url if marketing else None,
            unsubscribe_mailto=(
                unsubscribe_mailto(message.token, domain)
                if marketing and self.settings.unsubscribe_mailto
                else None
            ),
        )
        raw = skeleton.build(parts)
        if self.dkim is not None:
            raw = self.dkim.sign(raw)
        return raw, rendered.subject

    def context(self, message: Message, *, unsubscribe_url: str) -> dict[str, Any]:
        """The render context: the row's stored data plus sender identity and link functions."""
        preferences_url = self.links.preferences_url(message.token)
        context: dict[str, Any] = dict(message.context)
        context.setdefault("lang", "de")
        # Every variable the editor's preview offers must exist at send time too, or a
        # template that previewed fine would fail here.
        context.setdefault("preheader", "")
        context["sender"] = {
            "name": self.settings.mail_from_name,
            "address": self.settings.mail_from,
            "imprint": list(self.settings.sender_imprint),
        }
        context["unsubscribe_url"] = lambda: unsubscribe_url
        context["preferences_url"] = lambda: preferences_url
        # Tracking consent is the consent domain's decision; until it says yes, links stay as
        # the template wrote them.
        context["track_link"] = lambda url: url
        if message.builtin in CONFIRMING_BUILTINS:
            # Derived here, never stored: see identity.confirmation_token.
            token = confirmation_token(self.settings.secret_key, message.token)
            context["confirm_url"] = f"{self.settings.base_url.rstrip('/')}/confirm/{token}"
        return context

    def _skeleton(self, key: Hashable, message: Message) -> MessageSkeleton:
        with self._skeleton_lock:
            skeleton = self._skeletons.get(key)
            if skeleton is None:
                domain = self.settings.mail_domain
                kind = f"v{key[1]}" if key[0] == "version" else str(key[1])  # type: ignore[index]
                skeleton = MessageSkeleton(
                    from_addr=self.settings.mail_from,
                    from_name=self.settings.mail_from_name,
                    list_id=f"<{message.purpose.value}.{domain}>",
                    # Gmail's feedback loop aggregates complaints per campaign: a:b:c:SenderId.
                    feedback_id=f"{kind}:{message.purpose.value}:nurture:{domain}",
                )
                self._skeletons[key] = skeleton
            return skeleton

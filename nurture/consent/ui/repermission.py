"""Contacts → Re-permission: consents about to lapse, and the one mail asking to renew them.

Sending is a marketer's decision, never automatic: the page lists the contacts whose consent
lapses soon, the marketer ticks them and sends. The list and the send both run the service in
nurture.consent.repermission; this module only reads the request and reports.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext

from nurture.auth.access import me, roles_required
from nurture.auth.forms import EmptyForm
from nurture.auth.models import Role
from nurture.consent.ledger import Origin
from nurture.consent.repermission import (
    DEFAULT_WITHIN_DAYS,
    Outcome,
    approaching_dormancy,
    send_repermissions,
)
from nurture.consent.ui import bp
from nurture.contacts.queries import MAX_ID
from nurture.i18n import translate_error
from nurture.web.context import db_session, now, settings

PAGE_SIZE = 100
WINDOWS = (30, 60, 90, 180)
# A selection larger than this is a crafted request: one page holds PAGE_SIZE contacts.
MAX_SELECTED = 1000
# Flash messages are for a glance; the first reasons name the problem, the rest are counted.
SHOWN_REFUSALS = 10


def _window(value: str | None) -> int:
    try:
        days = int(value or "")
    except ValueError:
        return DEFAULT_WITHIN_DAYS
    return days if days in WINDOWS else DEFAULT_WITHIN_DAYS


def _cursor(value: str | None) -> int:
    try:
        after = int(value or "0")
    except ValueError:
        return 0
    return after if 0 <= after <= MAX_ID else 0


def _selected() -> list[int]:
    ids = []
    for raw in request.form.getlist("contact"):
        try:
            value = int(raw)
        except ValueError:
            continue
        if 0 < value <= MAX_ID:
            ids.append(value)
    return list(dict.fromkeys(ids))


@bp.get("/contacts/repermission", endpoint="repermission")
@roles_required(Role.ADMIN, Role.MARKETER)
def repermission() -> ResponseReturnValue:
    within = _window(request.args.get("within"))
    after = _cursor(request.args.get("after"))
    config = settings()
    # One row more than a page tells whether a next page exists without a COUNT.
    rows = approaching_dormancy(
        db_session(),
        now=now(),
        settings=config,
        within_days=within,
        limit=PAGE_SIZE + 1,
        after=after,
    )
    following = rows[PAGE_SIZE - 1].contact_id if len(rows) > PAGE_SIZE else None
    return render_template(
        "consent/repermission_list.html",
        rows=rows[:PAGE_SIZE],
        within=within,
        windows=WINDOWS,
        after=after,
        following=following,
        select_all=request.args.get("select") == "all",
        dormancy_months=config.consent_dormancy_months,
        form=EmptyForm(),
    )


def _report(outcome: Outcome) -> None:
    if outcome.queued:
        count = len(outcome.queued)
        flash(
            ngettext(
                "%(num)d re-permission mail queued.", "%(num)d re-permission mails queued.", count
            ),
            "success",
        )
    if not outcome.refused:
        return
    count = len(outcome.refused)
    flash(
        ngettext("%(num)d contact was refused:", "%(num)d contacts were refused:", count),
        "warning",
    )
    for refusal in outcome.refused[:SHOWN_REFUSALS]:
        flash(translate_error(refusal.error), "error")
    if count > SHOWN_REFUSALS:
        rest = count - SHOWN_REFUSALS
        flash(ngettext("… and %(num)d more.", "… and %(num)d more.", rest), "error")


@bp.post("/contacts/repermission", endpoint="repermission_send")
@roles_required(Role.ADMIN, Role.MARKETER)
def repermission_send() -> ResponseReturnValue:
    if not EmptyForm().validate_on_submit():
        abort(400)
    within = _window(request.form.get("within"))
    selected = _selected()
    if len(selected) > MAX_SELECTED:
        abort(400)
    if not selected:
        flash(_("Select at least one contact to ask."), "error")
        return redirect(url_for("consent.repermission", within=within))
    user = me()
    outcome = send_repermissions(
        db_session(),
        selected,
        now=now(),
        settings=settings(),
        origin=Origin(source=f"user:{user.id}"),
        within_days=within,
    )
    db_session().commit()
    _report(outcome)
    return redirect(url_for("consent.repermission", within=within))

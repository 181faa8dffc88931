"""Mail pages: template editor and preview, outbox, and the mailbox of captured mails."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from nurture.auth.access import me, roles_required
from nurture.auth.models import Role
from nurture.i18n import translate_error
from nurture.mail import outbox, queries
from nurture.mail.forms import EmptyForm, TemplateForm, TemplateVersionForm, TestMailForm
from nurture.mail.models import CapturedMail, EmailTemplate, MessageState, TemplateVersion
from nurture.mail.render import (
    CONTEXT_VARIABLES,
    RenderedMail,
    TemplateError,
    check_template,
    sample_context,
)
from nurture.mail.templates import (
    TemplateDraft,
    TemplateInputError,
    create_template,
    enqueue_test_mail,
    latest_version,
    list_templates,
    preview,
    save_version,
    version_source,
)
from nurture.web.context import db_session, now, settings

bp = Blueprint("mail", __name__)

EDITORS = (Role.ADMIN, Role.MARKETER)
PAGE_SIZE = 50
PREVIEW_LANGS = ("de", "en")

# For documents that show mail HTML (a template preview, a captured mail): the mail's own
# inline styles work, nothing else does: no scripts (sandbox), no fetches (default-src 'none',
# so no tracking pixels either), framed by nurture's own pages only.
ISOLATED_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'self'; sandbox"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# An iframe srcdoc inherits the CSP of the page that holds it, so a draft's preview would lose
# every inline style of the mail under the app-wide policy. Only this response allows inline
# styles; scripts stay 'self' only, and the preview frame is sandboxed without allow-scripts.
DRAFT_PREVIEW_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@dataclass(frozen=True)
class PreviewPane:
    """One language's preview; ``src`` is a saved version's own URL, None for an inline draft."""

    lang: str
    mail: RenderedMail
    src: str | None = None


# -- helpers ---------------------------------------------------------------------------------


def _template_or_404(template_id: int) -> EmailTemplate:
    template = queries.get_template(db_session(), template_id)
    if template is None or template.archived_at is not None:
        abort(404)
    return template


def _imprint() -> tuple[str, ...]:
    return settings().sender_imprint


def _lang(value: str | None) -> str:
    return value if value in PREVIEW_LANGS else PREVIEW_LANGS[0]


def _draft(form: TemplateVersionForm) -> TemplateDraft:
    def clean(value: str | None) -> str:
        # Browsers submit textarea line breaks as CRLF; versions store plain LF so that an
        # unchanged resubmission compares equal to what was saved.
        return (value or "").replace("\r\n", "\n")

    return TemplateDraft(
        subject=(form.subject.data or "").strip(),
        html=clean(form.html.data),
        text=clean(form.text.data) or None,
        css=clean(form.css.data),
        layout=form.layout.data or "default",
    )


def _form_data(version: TemplateVersion | None) -> dict[str, str]:
    if version is None:
        return {}
    return {
        "subject": version.subject,
        "html": version.html,
        "text": version.text or "",
        "css": version.css,
        "layout": version.layout or "none",
    }


def _render_version(version: TemplateVersion, lang: str) -> RenderedMail:
    return check_template(version_source(version), sample_context(lang=lang, imprint=_imprint()))


def _draft_panes(draft: TemplateDraft) -> list[PreviewPane]:
    return [
        PreviewPane(lang, preview(draft, imprint=_imprint(), lang=lang)) for lang in PREVIEW_LANGS
    ]


def _version_panes(version: TemplateVersion) -> list[PreviewPane]:
    return [
        PreviewPane(
            lang,
            _render_version(version, lang),
            url_for(
                "mail.version_preview",
                template_id=version.template_id,
                number=version.number,
                lang=lang,
            ),
        )
        for lang in PREVIEW_LANGS
    ]


def _wants_preview() -> bool:
    return request.form.get("action") == "preview"


def _editor(
    template: EmailTemplate | None,
    form: TemplateVersionForm,
    *,
    status: int = 200,
    error: str | None = None,
    panes: list[PreviewPane] | None = None,
    preview_error: str | None = None,
    test_form: TestMailForm | None = None,
) -> ResponseReturnValue:
    versions = queries.list_versions(db_session(), template.id) if template else []
    headers = {"Cache-Control": "no-store"}
    if panes and any(p.src is None for p in panes):
        headers["Content-Security-Policy"] = DRAFT_PREVIEW_PAGE_CSP
    page = render_template(
        "mailui/template_edit.html",
        template=template,
        form=form,
        error=error,
        previewing=_wants_preview(),
        panes=panes or [],
        preview_error=preview_error,
        versions=versions,
        variables=CONTEXT_VARIABLES,
        test_form=test_form or TestMailForm(formdata=None, to=me().email),
    )
    return page, status, headers


def _saved_editor(
    template: EmailTemplate, *, status: int = 200, test_form: TestMailForm | None = None
) -> ResponseReturnValue:
    latest = latest_version(db_session(), template.id)
    form = TemplateVersionForm(formdata=None, data=_form_data(latest))
    panes, problem = [], None
    if latest is not None:
        try:
            panes = _version_panes(latest)
        except TemplateError as exc:
            # Saved versions rendered when saved; this shows a later change of the renderer.
            problem = translate_error(exc)
    return _editor(
        template, form, status=status, panes=panes, preview_error=problem, test_form=test_form
    )


def _refused(
    template: EmailTemplate | None,
    form: TemplateVersionForm,
    exc: TemplateInputError | TemplateError,
) -> ResponseReturnValue:
    """The editor again, with the problem above the form and at the field it concerns."""
    db_session().rollback()  # nothing of a refused save may stay in the session
    message = translate_error(exc)
    part = getattr(exc, "part", None)
    if part and part in form:
        form[part].errors = [*form[part].errors, message]
    return _editor(template, form, status=422, error=message)


def _isolated_html(html: str, status: int = 200) -> Response:
    # Set before the app's after_request hook, whose setdefault then leaves these alone.
    return Response(html, status=status, mimetype="text/html", headers=ISOLATED_HEADERS)


# -- templates -------------------------------------------------------------------------------


@bp.get("/templates")
@roles_required(*EDITORS)
def templates() -> ResponseReturnValue:
    return render_template("mailui/templates.html", rows=list_templates(db_session()))


@bp.route("/templates/new", methods=["GET", "POST"])
@roles_required(*EDITORS)
def template_new() -> ResponseReturnValue:
    form = TemplateForm()
    if request.method == "GET":
        return _editor(None, form)
    if not form.validate_on_submit():
        return _editor(None, form, status=422)
    draft = _draft(form)
    try:
        if _wants_preview():
            return _editor(None, form, panes=_draft_panes(draft))
        template = create_template(
            db_session(),
            name=form.name.data or "",
            description=form.description.data or "",
            draft=draft,
            now=now(),
            imprint=_imprint(),
            user_id=me().id,
        )
    except (TemplateInputError, TemplateError) as exc:
        return _refused(None, form, exc)
    db_session().commit()
    flash(_("Template %(name)s created as version 1.", name=template.name), "success")
    return redirect(url_for("mail.template_edit", template_id=template.id))


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@roles_required(*EDITORS)
def template_edit(template_id: int) -> ResponseReturnValue:
    template = _template_or_404(template_id)
    if request.method == "GET":
        return _saved_editor(template)
    form = TemplateVersionForm()
    if not form.validate_on_submit():
        return _editor(template, form, status=422)
    draft = _draft(form)
    before = latest_version(db_session(), template.id)
    try:
        if _wants_preview():
            return _editor(template, form, panes=_draft_panes(draft))
        version = save_version(
            db_session(), template, draft, now=now(), imprint=_imprint(), user_id=me().id
        )
    except (TemplateInputError, TemplateError) as exc:
        return _refused(template, form, exc)
    db_session().commit()
    if before is not None and version.id == before.id:
        flash(_("Nothing changed; still version %(number)d.", number=version.number), "info")
    else:
        flash(_("Saved as version %(number)d.", number=version.number), "success")
    return redirect(url_for("mail.template_edit", template_id=template.id))


@bp.get("/templates/<int:template_id>/versions/<int:number>/preview.html")
@roles_required(*EDITORS)
def version_preview(template_id: int, number: int) -> ResponseReturnValue:
    version = queries.get_version(db_session(), template_id, number)
    if version is None:
        abort(404)
    try:
        mail = _render_version(version, _lang(request.args.get("lang")))
    except TemplateError as exc:
        return Response(
            translate_error(exc), status=422, mimetype="text/plain", headers=ISOLATED_HEADERS
        )
    return _isolated_html(mail.html)


@bp.post("/templates/<int:template_id>/test")
@roles_required(*EDITORS)
def template_test(template_id: int) -> ResponseReturnValue:
    template = _template_or_404(template_id)
    version = latest_version(db_session(), template.id)
    if version is None:
        abort(404)
    form = TestMailForm()
    if not form.validate_on_submit():
        return _saved_editor(template, status=422, test_form=form)
    address = (form.to.data or "").strip()
    enqueue_test_mail(db_session(), version, to_addr=address, to_name=me().name, now=now())
    db_session().commit()
    flash(
        _("Test mail queued to %(email)s; the worker sends it within seconds.", email=address),
        "success",
    )
    return redirect(url_for("mail.template_edit", template_id=template.id))


# -- outbox ----------------------------------------------------------------------------------


def _state_arg(value: str | None) -> MessageState | None:
    try:
        return MessageState(value) if value else None
    except ValueError:
        return None


@bp.get("/outbox")
@roles_required(*EDITORS)
def outbox_list() -> ResponseReturnValue:
    state = _state_arg(request.args.get("state"))
    search = (request.args.get("q") or "").strip()[: queries.SEARCH_MAX]
    before = request.args.get("before", type=int)
    # One row more than a page tells whether an older page exists without a COUNT.
    rows = queries.list_messages(
        db_session(), state=state, search=search, before_id=before, limit=PAGE_SIZE + 1
    )
    older = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return render_template(
        "mailui/outbox.html",
        messages=rows[:PAGE_SIZE],
        counts=outbox.counts_by_state(db_session()),
        states=list(MessageState),
        state=state.value if state else None,
        q=search,
        before=before,
        older=older,
    )


@bp.get("/outbox/<int:message_id>")
@roles_required(*EDITORS)
def outbox_detail(message_id: int) -> ResponseReturnValue:
    detail = queries.message_detail(db_session(), message_id)
    if detail is None:
        abort(404)
    message, events, captured = detail
    return render_template(
        "mailui/outbox_detail.html",
        message=message,
        events=events,
        captured=captured,
        parts=queries.mail_parts(captured.raw) if captured else None,
        context_json=json.dumps(message.context, indent=2, ensure_ascii=False, sort_keys=True),
        action_form=EmptyForm(),
    )


@bp.post("/outbox/<int:message_id>/<any(resend, drop):action>")
@roles_required(*EDITORS)
def outbox_decide(message_id: int, action: str) -> ResponseReturnValue:
    if not EmptyForm().validate_on_submit():
        abort(400)
    if queries.get_message(db_session(), message_id) is None:
        abort(404)
    decide = outbox.resend_uncertain if action == "resend" else outbox.drop_uncertain
    moved = decide(db_session(), message_id, now=now(), by=me().email)
    db_session().commit()
    if not moved:
        # Someone else decided first, or the row was never uncertain: say so, change nothing.
        flash(_("This message is no longer uncertain; nothing was changed."), "warning")
    elif action == "resend":
        flash(_("Message %(id)d queued again.", id=message_id), "success")
    else:
        flash(_("Message %(id)d dropped; it will not be sent.", id=message_id), "success")
    return redirect(url_for("mail.outbox_detail", message_id=message_id))


# -- mailbox ---------------------------------------------------------------------------------


@bp.get("/mailbox")
@roles_required(*EDITORS)
def mailbox() -> ResponseReturnValue:
    before = request.args.get("before", type=int)
    rows = queries.list_captured(db_session(), before_id=before, limit=PAGE_SIZE + 1)
    older = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return render_template(
        "mailui/mailbox.html",
        mails=rows[:PAGE_SIZE],
        before=before,
        older=older,
        transport=settings().mail_transport,
    )


def _captured_or_404(captured_id: int) -> CapturedMail:
    captured = queries.get_captured(db_session(), captured_id)
    if captured is None:
        abort(404)
    return captured


@bp.get("/mailbox/<int:captured_id>")
@roles_required(*EDITORS)
def mailbox_detail(captured_id: int) -> ResponseReturnValue:
    captured = _captured_or_404(captured_id)
    return render_template(
        "mailui/mailbox_detail.html", mail=captured, parts=queries.mail_parts(captured.raw)
    )


@bp.get("/mailbox/<int:captured_id>/html")
@roles_required(*EDITORS)
def mailbox_html(captured_id: int) -> ResponseReturnValue:
    parts = queries.mail_parts(_captured_or_404(captured_id).raw)
    if parts.html is None:
        abort(404)
    return _isolated_html(parts.html)


@bp.get("/mailbox/<int:captured_id>/raw")
@roles_required(*EDITORS)
def mailbox_raw(captured_id: int) -> ResponseReturnValue:
    captured = _captured_or_404(captured_id)
    return Response(
        captured.raw,
        mimetype="text/plain",
        headers={
            "Content-Disposition": f"attachment; filename=message-{captured.id}.eml",
            "Cache-Control": "no-store",
        },
    )

"""Login, logout, user administration and personal API tokens (HTML)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from nurture.auth.access import login_required, me, roles_required
from nurture.auth.forms import (
    CreateUserForm,
    EmptyForm,
    LoginForm,
    PasswordForm,
    RoleForm,
    TokenForm,
)
from nurture.auth.login import LoginFailure, authenticate
from nurture.auth.models import Role, User
from nurture.auth.passwords import PasswordPolicyError, generate_password, verify_password
from nurture.auth.tokens import TokenError, create_token, get_user_token, list_tokens, revoke_token
from nurture.auth.users import (
    UserError,
    create_user,
    list_users,
    parse_role,
    set_active,
    set_password,
    set_role,
)
from nurture.i18n import translate_error
from nurture.web.context import db_session, now, settings

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: ``next`` must never become an open redirect."""
    if not target:
        return url_for("web.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.dashboard")
    if "\\" in target:
        return url_for("web.dashboard")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("web.dashboard"))
    form = LoginForm(next=request.args.get("next", ""))
    status = 200
    if form.validate_on_submit():
        cfg = settings()
        result = authenticate(
            db_session(),
            form.email.data or "",
            form.password.data or "",
            ip=request.remote_addr or "unknown",
            now=now(),
            max_failures=cfg.login_max_failures,
            lock_minutes=cfg.login_lock_minutes,
        )
        db_session().commit()
        if result.user is not None:
            session.clear()
            login_user(result.user)
            session["last_seen"] = now().isoformat()
            return redirect(_safe_next(form.next.data))
        if result.failure == LoginFailure.LOCKED:
            minutes = max(1, int((result.retry_after.total_seconds() + 59) // 60))  # type: ignore[union-attr]
            flash(
                _(
                    "Too many failed logins. Try again in %(minutes)d minutes.",
                    minutes=minutes,
                ),
                "error",
            )
            status = 429
        else:
            flash(_("Email or password is wrong."), "error")
            status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    logout_user()
    session.clear()
    flash(_("You are logged out."), "info")
    return redirect(url_for("auth.login"))


# -- user administration ------------------------------------------------------------------------


def _user_or_404(user_id: int) -> User:
    user = db_session().get(User, user_id)
    if user is None:
        abort(404)
    return user


def _users_page(form: CreateUserForm, status: int = 200, shown: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    # A generated password is rendered into this one response, never flashed: flashes travel
    # in the (signed, not encrypted) session cookie.
    page = render_template(
        "admin/users.html",
        form=form,
        users=list_users(db_session()),
        role_form=RoleForm(),
        action_form=EmptyForm(),
        shown_password=shown,
    )
    return page, status, {"Cache-Control": "no-store"}


@bp.route("/settings/users", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def users() -> ResponseReturnValue:
    form = CreateUserForm()
    if form.validate_on_submit():
        password = form.password.data or generate_password()
        try:
            user = create_user(
                db_session(),
                email=form.email.data or "",
                name=form.name.data or "",
                role=parse_role(form.role.data or ""),
                password=password,
                now=now(),
            )
        except (UserError, PasswordPolicyError) as exc:
            db_session().rollback()
            flash(translate_error(exc), "error")
            return _users_page(form, 422)
        db_session().commit()
        flash(_("User %(email)s created.", email=user.email), "success")
        if form.password.data:
            return redirect(url_for("auth.users"))
        return _users_page(
            CreateUserForm(formdata=None), shown={"email": user.email, "password": password}
        )
    return _users_page(form, 400 if request.method == "POST" else 200)


@bp.route("/settings/users/<int:user_id>/role", methods=["POST"])
@roles_required(Role.ADMIN)
def change_role(user_id: int) -> ResponseReturnValue:
    user = _user_or_404(user_id)
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        set_role(db_session(), user, parse_role(form.role.data or ""), acting=me())
    except UserError as exc:
        db_session().rollback()
        flash(translate_error(exc), "error")
    else:
        db_session().commit()
        flash(_("Role of %(email)s changed.", email=user.email), "success")
    return redirect(url_for("auth.users"))


@bp.route("/settings/users/<int:user_id>/<any(activate, deactivate):action>", methods=["POST"])
@roles_required(Role.ADMIN)
def change_active(user_id: int, action: str) -> ResponseReturnValue:
    user = _user_or_404(user_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        set_active(db_session(), user, action == "activate", acting=me())
    except UserError as exc:
        db_session().rollback()
        flash(translate_error(exc), "error")
    else:
        db_session().commit()
        message = _("%(email)s activated.") if action == "activate" else _("%(email)s deactivated.")
        flash(message % {"email": user.email}, "success")
    return redirect(url_for("auth.users"))


@bp.route("/settings/users/<int:user_id>/password", methods=["POST"])
@roles_required(Role.ADMIN)
def reset_password(user_id: int) -> ResponseReturnValue:
    user = _user_or_404(user_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    password = generate_password()
    set_password(db_session(), user, password)
    db_session().commit()
    return _users_page(
        CreateUserForm(formdata=None), shown={"email": user.email, "password": password}
    )


# -- own account ----------------------------------------------------------------------------------


@bp.route("/settings/account", methods=["GET", "POST"])
@login_required
def account() -> ResponseReturnValue:
    form = PasswordForm()
    status = 200
    if form.validate_on_submit():
        user = me()
        if not verify_password(user.password_hash, form.current_password.data or ""):
            form.current_password.errors = [_("The current password is wrong.")]
            return render_template("auth/account.html", form=form), 422
        try:
            set_password(db_session(), user, form.password.data or "")
        except PasswordPolicyError as exc:
            db_session().rollback()
            flash(translate_error(exc), "error")
            status = 422
        else:
            db_session().commit()
            # The session version changed; log in again under the new one.
            login_user(user)
            flash(_("Your password was changed; other sessions were logged out."), "success")
            return redirect(url_for("auth.account"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/account.html", form=form), status


@bp.route("/settings/tokens", methods=["GET", "POST"])
@login_required
def tokens() -> ResponseReturnValue:
    form = TokenForm()
    new_token = None
    status = 200
    if form.validate_on_submit():
        try:
            _token, new_token = create_token(db_session(), me(), form.name.data or "", now=now())
        except TokenError as exc:
            db_session().rollback()
            flash(translate_error(exc), "error")
            status = 422
        else:
            db_session().commit()
            form = TokenForm(formdata=None)
    return (
        render_template(
            "auth/tokens.html",
            form=form,
            tokens=list_tokens(db_session(), me()),
            new_token=new_token,
            action_form=EmptyForm(),
        ),
        status,
    )


@bp.route("/settings/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke(token_id: int) -> ResponseReturnValue:
    if not EmptyForm().validate_on_submit():
        abort(400)
    token = get_user_token(db_session(), me(), token_id)
    if token is None:
        abort(404)
    revoke_token(db_session(), token, now=now())
    db_session().commit()
    flash(_("Token %(name)s revoked.", name=token.name), "success")
    return redirect(url_for("auth.tokens"))

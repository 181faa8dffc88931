"""nurture: email win-back and lead-nurturing automation."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from flask import Flask, flash, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from nurture.clock import Clock
from nurture.config import Settings, load_settings
from nurture.state import Nurture, build_state

csrf = CSRFProtect()


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the web application. It never touches the database at start-up."""
    settings = settings or load_settings()
    app = Flask(__name__, instance_path=str(settings.instance_path))
    state = build_state(settings, clock=clock)
    app.extensions["nurture"] = state
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_NAME="nurture_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_idle_minutes),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session, which has its own limit
        BABEL_DEFAULT_LOCALE="en",
        BABEL_DEFAULT_TIMEZONE="UTC",
        TESTING=settings.testing,
    )
    _init_extensions(app)
    _register_blueprints(app)
    _register_hooks(app, state)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    return app


def _init_extensions(app: Flask) -> None:
    from nurture.auth.access import login_manager
    from nurture.i18n import init_i18n

    csrf.init_app(app)
    login_manager.init_app(app)
    init_i18n(app)


def _register_blueprints(app: Flask) -> None:
    from nurture.api import bp as api_bp
    from nurture.auth.views import bp as auth_bp
    from nurture.consent.public import bp as public_bp
    from nurture.consent.ui import bp as consent_bp
    from nurture.contacts.ui import bp as contacts_bp
    from nurture.mail.views import bp as mail_bp
    from nurture.ops.views import bp as ops_bp
    from nurture.web.errors import register_error_handlers
    from nurture.web.views import bp as web_bp

    # The API authenticates with Bearer tokens, never cookies, so cross-site forgery has
    # nothing to ride on there.
    csrf.exempt(api_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(mail_bp)
    app.register_blueprint(contacts_bp)
    app.register_blueprint(consent_bp)
    app.register_blueprint(public_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(ops_bp)
    register_error_handlers(app)


def _register_hooks(app: Flask, state: Nurture) -> None:
    from nurture.web.context import close_db_session

    app.teardown_appcontext(close_db_session)
    idle = timedelta(minutes=state.settings.session_idle_minutes)

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.before_request
    def _expire_idle_session() -> ResponseReturnValue | None:
        if request.blueprint in ("api", "ops") or request.endpoint == "static":
            return None
        if not current_user.is_authenticated:
            return None
        now = state.clock.now()
        last_seen = session.get("last_seen")
        if last_seen and now - datetime.fromisoformat(last_seen) > idle:
            logout_user()
            session.clear()
            flash(_("Your session has expired. Please log in again."), "info")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        session["last_seen"] = now.isoformat()
        session.permanent = True
        return None

    @app.after_request
    def _security_headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        return response

    @app.after_request
    def _count_request(response):  # type: ignore[no-untyped-def]
        endpoint = request.endpoint or "unmatched"
        state.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            state.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
        return response

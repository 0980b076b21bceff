"""The app factory. create_app() only wires things together: it touches neither the database
nor the network. Every blueprint, the CLI and the services it hooks in are imported here, at the
top: importing this module loads the whole portal, which create_app() needed anyway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from sqlalchemy.engine import make_url
from werkzeug.middleware.proxy_fix import ProxyFix

from config import INSTANCE_DIR, config_for
from portal import display, live, unit_of_work
from portal.auth.session_cookie import SignInCookie
from portal.auth.views import bp as auth_bp
from portal.cli import register as register_cli
from portal.clients.views import bp as clients_bp
from portal.email_templates import bp as email_templates_bp
from portal.graph_notifications import bp as graph_notifications_bp
from portal.extensions import csrf, db, htmx, login_manager
from portal.mailboxes import bp as mailboxes_bp
from portal.main.views import bp as main_bp
from portal.oauth_callback import bp as oauth_callback_bp
from portal.responses import hx_redirect, same_site_path
from portal.outbound.settings import may_change_installation as allowed_to_change_installation
from portal.clients.forms import ClientForm
from portal.mailboxes.forms import MailboxForm, OutgoingForm, RouteForm
from portal.tickets.forms import FieldsForm
from portal.users.forms import InviteForm, ProfileForm, RoleForm
from portal.services import audit, sla
from portal.services.clients import timezone_names
from portal.services.users import user_for_session
from portal.settings.views import bp as settings_bp
import portal.settings.custom_fields  # noqa: F401,E402 - its routes go on the settings blueprint
from portal.settings import sla as _sla_pages  # noqa: F401 - its routes join the settings blueprint
from portal.tickets import bp as tickets_bp
from portal.unprocessed.views import bp as unprocessed_bp
from portal.users.account import bp as account_bp
from portal.users.views import bp as users_bp, invitation_bp

ROOT = Path(__file__).resolve().parent.parent

# Endpoints anyone may reach without signing in.
PUBLIC_ENDPOINTS = {"auth.sign_in", "main.healthz", "main.metrics", "static", "invitation.accept",
                    "oauth_callback.callback",  # a customer's admin finishes a tenant consent
                    "graph_notifications.notifications", "graph_notifications.lifecycle"}  # Microsoft Graph calls

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def content_security_policy(form_targets=()) -> str:
    """The policy; `form_targets` are origins a page's forms may also lead to (Connect's 303 to a
    provider's sign-in: browsers hold a form's redirects to form-action too)."""
    if not form_targets:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", "form-action 'self' " + " ".join(form_targets))


def create_app(config_name: str | None = None, *, migrations: bool = True, **overrides: Any) -> Flask:
    config = config_for(config_name)
    config.finish()
    app = Flask(
        "portal",  # the package's name, as before create_app moved here: the app's logger is "portal"
        instance_path=str(INSTANCE_DIR),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_object(config)
    app.config.update(overrides)
    app.session_interface = SignInCookie()
    init_extensions(app, migrations=migrations)
    init_blueprints(app)
    init_security(app)
    unit_of_work.init_app(app)
    live.init_app(app)
    init_templates(app)
    init_errors(app)
    init_cli(app)
    return app


def init_extensions(app: Flask, *, migrations: bool = True) -> None:
    dead_peer = app.config["TIDEMARK_DB_DEAD_PEER_SECONDS"]
    if make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name() == "postgresql" and dead_peer > 0:
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {**pg_dead_peer_client(dead_peer), **options.get("connect_args", {})}
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_settings)
    elif engine.dialect.name == "postgresql" and dead_peer > 0:
        event.listen(engine, "connect", lambda connection, _record: _pg_dead_peer_server(connection, dead_peer))
    if migrations:
        # Alembic is a third of start-up time; workers never migrate and skip it.
        from flask_migrate import Migrate  # noqa: PLC0415

        Migrate(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.sign_in"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.session_protection = "basic"
    if app.config["TIDEMARK_PROXY_COUNT"]:
        n = app.config["TIDEMARK_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    login_manager.user_loader(user_for_session)


def pg_dead_peer_client(seconds: int) -> dict:
    """libpq's side: keepalives on an idle connection, and a limit on data left unacknowledged,
    so that a query on a connection to a vanished server fails within `seconds`."""
    idle = max(1, seconds // 2)
    return {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": max(1, (seconds - idle) // 3),
            "keepalives_count": 3, "tcp_user_timeout": seconds * 1000}


def _pg_dead_peer_server(dbapi_connection, seconds: int) -> None:
    """The server's side of the same, set in the session (not as a startup option, which
    PgBouncer refuses): the backend of a vanished client ends, and its locks go with it."""
    client = pg_dead_peer_client(seconds)
    with dbapi_connection.cursor() as cursor:
        for name in ("keepalives_idle", "keepalives_interval", "keepalives_count"):
            cursor.execute(f"SET tcp_{name} = {int(client[name])}")
        cursor.execute(f"SET tcp_user_timeout = {int(client['tcp_user_timeout'])}")
    dbapi_connection.commit()


def _sqlite_settings(dbapi_connection, _record) -> None:
    """A write-ahead log: pages read while a worker writes, and a commit is one write to the
    log rather than to a journal and the file. Synchronous FULL all the same: a committed raw
    message must survive a power cut, since the mail server may be told to delete it next."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def init_blueprints(app: Flask) -> None:
    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(clients_bp)
    app.register_blueprint(tickets_bp)
    app.register_blueprint(email_templates_bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(mailboxes_bp)
    app.register_blueprint(unprocessed_bp)
    app.register_blueprint(users_bp)
    app.register_blueprint(invitation_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(oauth_callback_bp)
    app.register_blueprint(graph_notifications_bp)


def init_security(app: Flask) -> None:
    @app.before_request
    def require_sign_in():
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return None
        if not current_user.is_authenticated:
            if htmx:
                return hx_redirect(url_for("auth.sign_in"))
            return login_manager.unauthorized()
        g.msp_id = current_user.msp_id
        return None

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", content_security_policy(g.get("form_targets", ())))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        response.vary.add("HX-Request")
        return response


def init_templates(app: Flask) -> None:
    app.jinja_env.filters["when"] = display.when
    app.jinja_env.filters["duration"] = display.duration
    app.jinja_env.filters["audit_value"] = display.audit_value
    app.jinja_env.globals["field_errors"] = display.field_errors
    app.jinja_env.globals["retype_password"] = display.retype_password
    app.jinja_env.globals["RETYPE_PASSWORD"] = display.RETYPE_PASSWORD
    app.jinja_env.globals["timezone_names"] = timezone_names
    app.jinja_env.globals["sla_due"] = sla.list_due
    # A history's labels are those of the form of the record's own type ("Server" is a
    # mailbox's, "Assigned to" a ticket's).
    labels = {"client": display.form_labels(ClientForm), "mailbox": display.form_labels(MailboxForm, OutgoingForm, RouteForm),
              "user": display.form_labels(InviteForm, ProfileForm, RoleForm), "ticket": display.form_labels(FieldsForm)}
    app.jinja_env.globals["audit_changes"] = lambda entries: audit.readable_history(entries, labels)

    def may_change_installation() -> bool:
        """Whether the nav offers the installation-wide mail settings (asked once a request)."""
        if "may_change_installation" not in g:
            g.may_change_installation = current_user.is_authenticated and allowed_to_change_installation(
                current_user, app.config["TIDEMARK_OPERATORS"])
        return g.may_change_installation

    app.jinja_env.globals["may_change_installation"] = may_change_installation


def init_errors(app: Flask) -> None:
    def page(status: int, title: str, message: str):
        if request.path.startswith("/healthz") or request.accept_mimetypes.best == "application/json":
            return jsonify(error=title), status
        template = "errors/_error.html" if htmx else "errors/error.html"
        return render_template(template, status=status, title=title, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        if htmx:
            resp = app.response_class("The page was out of date; reloading.", status=400)
            resp.headers["HX-Refresh"] = "true"
            return resp
        flash("The form was out of date or sent from elsewhere. Please try again.", "error")
        return redirect(same_site_path(request.referrer) or url_for("main.dashboard"))

    @app.errorhandler(403)
    def forbidden(exc):
        return page(403, "Not allowed", "Your role cannot do this. Ask an administrator of your MSP.")

    @app.errorhandler(404)
    def not_found(exc):
        return page(404, "Not found", "There is nothing at this address, or it is not yours to see.")

    @app.errorhandler(413)
    def too_large(exc):
        limit = (app.config.get("MAX_CONTENT_LENGTH") or 0) // (1024 * 1024)
        return page(413, "Too large", f"The portal accepts at most {limit} MB at once. "
                                      "Send fewer or smaller files.")

    @app.errorhandler(500)
    def server_error(exc):
        db.session.rollback()
        return page(500, "Something went wrong", "The error was logged. Please try again in a moment.")


def init_cli(app: Flask) -> None:
    register_cli(app)

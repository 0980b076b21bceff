"""Mail settings: the MSP's own and (operators) the installation's default outgoing gateway and
switches;
an MSP's configuration as YAML: download, and upload with a dry run before it is applied; the
MSP's Microsoft 365 app; how long the MSP keeps raw mail (retention)."""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, flash, g, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from portal.auth.access import admin_required
from portal.extensions import db, htmx
from portal.inbound import retention
from portal.models.base import utcnow
from portal.outbound import settings as svc
from portal.outbound import servers
from portal.outbound.servers import send_environment
from portal.outbound.test_mail import send_gateway_test
from portal.responses import asks_first, hx_redirect
from portal.services import ValidationError, audit, config_io, microsoft_app
from portal.services.oauth_states import redirect_uri
from portal.transport.base import VERIFY_TLS_LABEL
from portal.settings.forms import current_msp_values, current_values, posted_msp_values, posted_values

bp = Blueprint("settings", __name__, url_prefix="/settings")


def _allowed() -> None:
    if not svc.may_change_installation(current_user, current_app.config["TIDEMARK_OPERATORS"]):
        abort(403)


def _keys() -> str:
    return current_app.config["TIDEMARK_ENCRYPTION_KEY"]


def _mail_page(status: int = 200, *, form: dict | None = None, errors: dict | None = None,
               msp_form: dict | None = None, msp_errors: dict | None = None, password_typed: bool = False,
               results: dict | None = None):
    """The MSP's own mail settings (its admins); the installation's below them (operators only).
    `results`: a test's answer by the id of the place it shows in."""
    installation = svc.may_change_installation(current_user, current_app.config["TIDEMARK_OPERATORS"])
    entries, _total = audit.history(g.msp_id, "client", g.msp_id, per_page=5 * CONFIG_HISTORY)
    entries = [e for e in entries if e.action in MSP_MAIL_ACTIONS][:CONFIG_HISTORY]
    return render_template(
        "settings/mail.html", installation=installation, form=form or (current_values() if installation else {}),
        errors=errors or {}, msp_form=msp_form or current_msp_values(g.msp_id), msp_errors=msp_errors or {},
        inherited=current_values(), password_typed=password_typed, history=entries, results=results or {},
        customer_notifications=svc.CUSTOMER_NOTIFICATIONS, verify_tls_label=VERIFY_TLS_LABEL), status


def _test_result(template: str, place: str, result: str):
    """htmx puts the answer in its place; a click made before htmx had taken the form (a plain
    POST) gets the whole page with the answer in the same place."""
    answer = render_template(template, result=result)
    if htmx:
        return answer
    return _mail_page(results={place: Markup(answer)})


# What the MSP's mail settings page lists from the MSP's history.
MSP_MAIL_ACTIONS = ("mail settings changed", "gateway set", "gateway changed", "gateway removed", "gateway tested")


@bp.route("/mail", methods=["GET", "POST"])
@admin_required
def mail():
    """GET: the page. POST: the installation's gateway and switches (operators only)."""
    if request.method == "GET":
        return _mail_page()
    _allowed()
    values = posted_values(request.form)
    try:
        svc.save_mail_settings(values, keys=_keys(), actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        form = {**current_values(), **{k: v for k, v in values.items() if k != "password"}}
        return _mail_page(422, form=form, errors=exc.errors, password_typed=bool(request.form.get("password")))
    flash("Mail settings saved.", "success")
    return hx_redirect(url_for("settings.mail"))


@bp.post("/mail/test")
def test_gateway():
    """"Send test email" through the saved default gateway (the same test as a mailbox's)."""
    _allowed()
    result = send_gateway_test(request.form.get("recipient", ""), send_environment(current_user), current_user)
    return _test_result("mailboxes/_send_result.html", "send-result", result)


@bp.post("/mail/check")
def check_gateway():
    """"Test connection" of the installation's saved default gateway (the operators only)."""
    _allowed()
    server = servers.installation_gateway()
    if server is None:
        result = "Not connected: there is no default gateway yet. Save its host first."
    else:
        _ok, result = servers.check_gateway(server, send_environment(current_user), current_user)
    return _test_result("settings/_check_result.html", "check-result", result)


@bp.post("/mail/msp")
@admin_required
def msp_mail():
    """The MSP's own values (each, or inherited from the installation) and its own gateway."""
    own, gateway = posted_msp_values(request.form)
    errors: dict = {}
    try:
        svc.save_msp_settings(current_user.msp, own, actor=current_user)
    except ValidationError as exc:
        errors.update(exc.errors)
    if gateway["host"] and not errors:
        try:
            servers.save_msp_gateway(g.msp_id, gateway, keys=_keys(), actor=current_user)
        except ValidationError as exc:
            errors.update(exc.errors)
    if errors:
        db.session.rollback()
        form = current_msp_values(g.msp_id)
        form.update({k: v for k, v in {**own, **gateway}.items() if k != "password"})
        form["inherits"] = [k for k in svc.SETTING_DEFAULTS if k not in own]
        return _mail_page(422, msp_form=form, msp_errors=errors, password_typed=bool(request.form.get("password")))
    flash("Your MSP's mail settings saved.", "success")
    return hx_redirect(url_for("settings.mail"))


@bp.post("/mail/msp/test")
@admin_required
def test_msp_gateway():
    """"Send test email" through the MSP's own saved gateway, held to the server-reach rule."""
    result = send_gateway_test(request.form.get("recipient", ""), send_environment(current_user), current_user,
                               own=True)
    return _test_result("mailboxes/_send_result.html", "msp-send-result", result)


@bp.post("/mail/msp/check")
@admin_required
def check_msp_gateway():
    """"Test connection": sign in to the MSP's own saved gateway (the server-reach rule applies)."""
    server = servers.msp_gateway(g.msp_id)
    if server is None:
        result = "Not connected: there is no gateway of your MSP yet. Save its host first."
    else:
        _ok, result = servers.check_gateway(server, send_environment(current_user), current_user)
    return _test_result("settings/_check_result.html", "msp-check-result", result)


@bp.post("/mail/msp/gateway/remove")
@admin_required
@asks_first("Remove the gateway")
def remove_msp_gateway():
    if servers.remove_msp_gateway(g.msp_id, actor=current_user):
        flash("Your MSP's mail goes through the installation's default gateway again.", "success")
    return hx_redirect(url_for("settings.mail"))


# --- configuration as YAML ------------------------------------------------------------------------------

CONFIG_HISTORY = 10


def _gateway_allowed() -> bool:
    return svc.may_change_installation(current_user, current_app.config["TIDEMARK_OPERATORS"])


def _configuration_page(status: int = 200, **context):
    entries, _total = audit.history(g.msp_id, "configuration", g.msp_id, per_page=CONFIG_HISTORY)
    context.setdefault("errors", {})
    context.setdefault("preview", None)
    return render_template("settings/configuration.html", history=entries, gateway_allowed=_gateway_allowed(),
                           **context), status


@bp.get("/configuration")
@admin_required
def configuration():
    return _configuration_page()


@bp.post("/configuration/export")
@admin_required
def export_configuration():
    with_secrets = request.form.get("with_secrets") == "1"
    data = config_io.export_config(keys=current_app.config["TIDEMARK_ENCRYPTION_KEY"], with_secrets=with_secrets,
                                   msp_id=g.msp_id, include_gateway=_gateway_allowed())
    if with_secrets:
        # Passwords leave the installation in clear text: who took them, and when, is on record
        # (committed before the answer leaves; a failed commit answers 500 instead).
        audit.record(current_user, g.msp_id, "configuration", g.msp_id, "downloaded with secrets")
    slug = re.sub(r"[^a-z0-9]+", "-", current_user.msp.name.lower()).strip("-") or "msp"
    response = current_app.response_class(config_io.dump(data), mimetype="application/yaml")
    filename = f"tidemark-{slug}-{utcnow():%Y-%m-%d}{'-with-secrets' if with_secrets else ''}.yaml"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _uploaded_text() -> tuple[str | None, str | None]:
    """(the YAML text, or None and what is wrong with the upload)."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.read(current_app.config["TIDEMARK_CONFIG_MAX_BYTES"] + 1)
        if problem := config_io.size_problem(len(raw)):
            return None, problem
        try:
            return raw.decode("utf-8-sig"), None
        except UnicodeDecodeError:
            return None, "The file is not UTF-8 text. Upload the YAML file that the download gives you."
    text = request.form.get("yaml", "")
    if text.strip():
        return text, None
    return None, "Choose a YAML file to import."


@bp.post("/configuration/import")
@admin_required
def import_configuration():
    applying = request.form.get("action") == "apply"
    text, problem = _uploaded_text()
    if problem:
        return _configuration_page(422, errors={"file": [problem]})
    options = {"keys": current_app.config["TIDEMARK_ENCRYPTION_KEY"], "actor": current_user,
               "msp": current_user.msp, "gateway_allowed": _gateway_allowed()}
    try:
        data = config_io.load(text, strict=True)
        if applying:
            counts = config_io.import_config(data, **options)
        else:
            counts, report = config_io.preview_import(data, **options)
    except ValidationError as exc:
        db.session.rollback()
        messages = [f"{where}: {m}" if where else m for where, ms in exc.errors.items() for m in ms]
        return _configuration_page(422, errors={"file": messages})
    if applying:
        audit.record(current_user, g.msp_id, "configuration", g.msp_id, "imported",
                     {k: [None, counts[k]] for k in ("created", "updated")})
        flash(f"Configuration imported: {counts['created']} created, {counts['updated']} updated, "
              f"{counts['unchanged']} unchanged.", "success")
        return hx_redirect(url_for("settings.configuration"))
    return _configuration_page(preview=report, counts=counts, yaml_text=text)


# --- the MSP's Microsoft 365 app ----------------------------------------------------------------------


MAX_CERTIFICATE_BYTES = 64 * 1024  # a key and a certificate chain fit many times over


@bp.route("/microsoft-365", methods=["GET", "POST"])
@admin_required
def microsoft_365():
    """The MSP's own app registration, which every customer tenant consents to. Per MSP: its
    admins enter it (not operators only); the secret is never shown back."""
    msp = current_user.msp
    row = microsoft_app.msp_microsoft_app(g.msp_id)
    form = {"client_id": row.client_id if row else "", "secret_expires": row.secret_expires if row else None}
    errors: dict = {}
    status = 200
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in microsoft_app.APP_KEYS}
        upload = request.files.get("certificate_file")
        if upload and upload.filename and not values["certificate"].strip():
            values["certificate"] = upload.read(MAX_CERTIFICATE_BYTES + 1)[:MAX_CERTIFICATE_BYTES]
        try:
            changes = microsoft_app.save_microsoft_app(msp, values, keys=current_app.config["TIDEMARK_ENCRYPTION_KEY"],
                                                       actor=current_user)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
            form.update(client_id=values["client_id"], secret_expires=values["secret_expires"])
        else:
            flash("Microsoft 365 app saved." if changes else "Nothing changed.", "success")
            return hx_redirect(url_for("settings.microsoft_365"))
    entries, _total = audit.history(g.msp_id, microsoft_app.RECORD, g.msp_id, per_page=CONFIG_HISTORY)
    expires = row.credential_expires if row else None
    days_left = (expires - utcnow().date()).days if expires else None
    return render_template("settings/microsoft.html", form=form, errors=errors, has_secret=bool(
        row and row.client_secret_encrypted), app=row, history=entries, days_left=days_left,
        redirect_uri=redirect_uri(current_app.config["TIDEMARK_PORTAL_URL"])), status


# --- how long the MSP keeps raw mail --------------------------------------------------------------------


def _days(text: str):
    """A whole number of days, empty for off, or the text itself for the service to name."""
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 6 else text


@bp.route("/retention", methods=["GET", "POST"])
@admin_required
def retention_page():
    """The MSP's retention days: raw mail of closed tickets, discarded unprocessed mail (off by default)."""
    msp = current_user.msp
    form = {k: getattr(msp, k) if getattr(msp, k) is not None else "" for k in retention.RETENTION_KEYS}
    errors: dict = {}
    status = 200
    if request.method == "POST":
        values = {k: _days(request.form.get(k, "")) for k in retention.RETENTION_KEYS}
        try:
            changes = retention.save_retention(msp, values, current_user)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
            form.update({k: request.form.get(k, "") for k in retention.RETENTION_KEYS})
        else:
            flash("Retention saved." if changes else "Nothing changed.", "success")
            return hx_redirect(url_for("settings.retention_page"))
    entries, _total = audit.history(g.msp_id, "client", g.msp_id, per_page=5 * CONFIG_HISTORY)
    entries = [e for e in entries if e.action in ("retention changed", retention.PURGED)][:CONFIG_HISTORY]
    return render_template("settings/retention.html", form=form, errors=errors, history=entries,
                           undo_days=retention.UNDO_DAYS, batch=retention.PURGE_BATCH), status

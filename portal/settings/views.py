"""Installation-wide mail settings: the default outgoing gateway and the staging switches."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, render_template, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.responses import hx_redirect
from portal.services import ValidationError, commit
from portal.services import outbound as svc

bp = Blueprint("settings", __name__, url_prefix="/settings")


def _allowed() -> None:
    if not svc.may_change_installation(current_user, current_app.config["TIDEMARK_OPERATORS"]):
        abort(403)


def _current() -> dict:
    gateway = svc.default_gateway()
    form = {k: svc.get_setting(k) for k in svc.SETTING_DEFAULTS}
    form.update({"host": "", "port": "", "security": "starttls", "username": "", "from": "", "has_password": False})
    if gateway is not None:
        form.update(host=gateway.host, port=gateway.port, security=gateway.security, username=gateway.username or "",
                    has_password=gateway.password_encrypted is not None, **{"from": gateway.from_address or ""})
    return form


@bp.route("/mail", methods=["GET", "POST"])
def mail():
    _allowed()
    errors: dict = {}
    form = _current()
    status = 200
    if request.method == "POST":
        f = request.form
        values = {"host": f.get("host", "").strip(), "port": f.get("port", type=int), "security": f.get("security"),
                  "username": f.get("username", "").strip(), "password": f.get("password") or None,
                  "from": f.get("from", "").strip(), "block_outgoing": f.get("block_outgoing") == "1",
                  "override_recipient": f.get("override_recipient", ""),
                  "auto_mail_limit_per_hour": f.get("auto_mail_limit_per_hour", type=int)}
        try:
            svc.save_mail_settings(values, keys=current_app.config["TIDEMARK_ENCRYPTION_KEY"], actor=current_user)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
            form.update({k: v for k, v in values.items() if k != "password"})
        else:
            commit()
            flash("Mail settings saved.", "success")
            return hx_redirect(url_for("settings.mail"))
    return render_template("settings/mail.html", form=form, errors=errors), status

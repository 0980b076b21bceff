"""The mail settings form: what the page shows to start with, and what a POST carries, as the
values `save_mail_settings` checks (it answers a ValidationError by field)."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from portal.outbound import settings as svc
from portal.outbound.servers import default_gateway


def current_values() -> dict:
    """The settings as saved; the gateway's password is never shown, only whether one is stored."""
    gateway = default_gateway()
    form = {k: svc.get_setting(k) for k in svc.SETTING_DEFAULTS}
    form.update({"host": "", "port": "", "security": "starttls", "username": "", "from": "", "has_password": False})
    if gateway is not None:
        form.update(host=gateway.host, port=gateway.port, security=gateway.security, username=gateway.username or "",
                    has_password=gateway.password_encrypted is not None, **{"from": gateway.from_address or ""})
    return form


def posted_values(f: MultiDict) -> dict:
    """An empty password keeps the stored one (None)."""
    return {"host": f.get("host", "").strip(), "port": f.get("port", type=int), "security": f.get("security"),
            "username": f.get("username", "").strip(), "password": f.get("password") or None,
            "from": f.get("from", "").strip(), "block_outgoing": f.get("block_outgoing") == "1",
            "override_recipient": f.get("override_recipient", ""),
            "auto_mail_limit_per_hour": f.get("auto_mail_limit_per_hour", type=int),
            "customer_notifications": f.getlist("customer_notifications")}

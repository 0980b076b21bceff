"""The mail settings forms: what the page shows to start with, and what a POST carries, as the
values the services check (they answer a ValidationError by field). The installation's section
(operators) and the MSP's own (its admins): the same fields, and on the MSP's a way back to
inheriting each setting."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from portal.models import SmtpServer
from portal.outbound import settings as svc
from portal.outbound.servers import installation_gateway, msp_gateway

GATEWAY_KEYS = ("host", "port", "security", "username", "password", "from", "verify_tls")


def _gateway_values(gateway: SmtpServer | None) -> dict:
    """The gateway as saved; its password is never shown, only whether one is stored."""
    form = {"host": "", "port": "", "security": "starttls", "username": "", "from": "", "has_password": False,
            "verify_tls": True, "last_test_message": None, "last_test_ok": None}
    if gateway is not None:
        form.update(host=gateway.host, port=gateway.port, security=gateway.security, username=gateway.username or "",
                    verify_tls=gateway.verify_tls, has_password=gateway.password_encrypted is not None,
                    last_test_message=gateway.last_test_message, last_test_ok=gateway.last_test_ok,
                    **{"from": gateway.from_address or ""})
    return form


def current_values() -> dict:
    """The installation's settings and default gateway as saved."""
    return {**{k: svc.get_setting(k) for k in svc.SETTING_DEFAULTS}, **_gateway_values(installation_gateway())}


def current_msp_values(msp_id: int) -> dict:
    """The MSP's settings in effect, which of them it inherits, and its own gateway."""
    own = svc.msp_own_settings(msp_id)
    form = {k: svc.get_setting(k, msp_id) for k in svc.SETTING_DEFAULTS}
    form["inherits"] = [k for k in svc.SETTING_DEFAULTS if k not in own]
    form.update(_gateway_values(msp_gateway(msp_id)))
    return form


def _gateway_posted(f: MultiDict) -> dict:
    """An empty password keeps the stored one (None); an unticked box is sent as nothing."""
    return {"host": f.get("host", "").strip(), "port": f.get("port", type=int), "security": f.get("security"),
            "username": f.get("username", "").strip(), "password": f.get("password") or None,
            "from": f.get("from", "").strip(), "verify_tls": f.get("verify_tls") == "1"}


def _settings_posted(f: MultiDict) -> dict:
    return {"block_outgoing": f.get("block_outgoing") == "1", "override_recipient": f.get("override_recipient", ""),
            "auto_mail_limit_per_hour": f.get("auto_mail_limit_per_hour", type=int),
            "customer_notifications": f.getlist("customer_notifications")}


def posted_values(f: MultiDict) -> dict:
    return {**_gateway_posted(f), **_settings_posted(f)}


def posted_msp_values(f: MultiDict) -> tuple[dict, dict]:
    """(the MSP's own settings: those not ticked "inherit", its gateway's fields)."""
    settings = _settings_posted(f)
    own = {k: v for k, v in settings.items() if f.get(f"inherit_{k}") != "1"}
    return own, _gateway_posted(f)

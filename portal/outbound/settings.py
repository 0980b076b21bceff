"""Installation-wide mail settings: the staging switches (block outgoing, override recipient),
the hourly limit on automatic mail, which changes the customer hears of, and who may change
them. Flush, never commit."""

from __future__ import annotations

from portal.extensions import db
from portal.models import Setting
from portal.outbound.servers import save_smtp_server
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address
from portal.services.clients import msp_count

DEFAULT_AUTO_LIMIT_PER_HOUR = 10
# Changes the customer hears of by email (the ticket's contact), each with its own template.
CUSTOMER_NOTIFICATIONS = {"closed": "their ticket is closed", "reopened": "their ticket is reopened",
                          "owner_changed": "a technician takes their ticket",
                          "priority_changed": "the priority of their ticket changes"}
SETTING_DEFAULTS = {"block_outgoing": False, "override_recipient": None,
                    "auto_mail_limit_per_hour": DEFAULT_AUTO_LIMIT_PER_HOUR,
                    "customer_notifications": ["closed", "reopened"]}


def get_setting(key: str):
    row = db.session.get(Setting, key)
    return row.value if row is not None else SETTING_DEFAULTS[key]


def set_setting(key: str, value) -> None:
    if key not in SETTING_DEFAULTS:
        raise KeyError(key)
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
    db.session.flush()


def may_change_installation(user, operators: list[str]) -> bool:
    """Installation-wide settings: the listed operators, or the admins of a one-MSP installation."""
    if user.email.lower() in operators:
        return True
    return user.is_admin and msp_count() == 1


def save_mail_settings(values: dict, *, keys: str, actor) -> None:
    """The default gateway and the switches from the settings page, audited."""
    errors: dict[str, list[str]] = {}
    limit = values.get("auto_mail_limit_per_hour")
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        errors["auto_mail_limit_per_hour"] = ["The limit is a whole number from 1 to 1000."]
    override = (values.get("override_recipient") or "").strip() or None
    if override:
        try:
            override = normalise_address(override)
        except AllowEntryError as exc:
            errors["override_recipient"] = [str(exc)]
    gateway = {k: values.get(k) for k in ("host", "port", "security", "username", "password", "from")}
    if gateway["host"]:
        try:
            save_smtp_server(gateway, keys=keys)
        except ValidationError as exc:
            errors.update(exc.errors)
    if errors:
        raise ValidationError(errors)
    before = {k: get_setting(k) for k in SETTING_DEFAULTS}
    set_setting("block_outgoing", bool(values.get("block_outgoing")))
    set_setting("override_recipient", override)
    set_setting("auto_mail_limit_per_hour", limit)
    set_setting("customer_notifications", [e for e in CUSTOMER_NOTIFICATIONS
                                           if e in (values.get("customer_notifications") or ())])
    changes = audit.diff(before, {k: get_setting(k) for k in SETTING_DEFAULTS})
    if gateway["host"]:
        changes["gateway"] = [None, f"{gateway['host']}:{gateway['port'] or ''}"]
    if changes:
        audit.record(actor, actor.msp_id, "installation", 0, "mail settings", changes)

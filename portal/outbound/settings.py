"""Mail settings: the staging switches (block outgoing, override recipient), the hourly limit on
automatic mail, which changes the customer hears of, and who may change them. The installation
sets the defaults (operators); each MSP may set its own value of each (its admins), and each
client its own customer notifications. A setting in effect for an MSP is its own value, else the
installation's, else the built-in default; a client's customer notifications are its own, else
its nearest ancestor's, else its MSP's setting. Flush, never commit."""

from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, MspSetting, Setting
from portal.outbound.servers import save_smtp_server
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address
from portal.services.clients import msp_count

DEFAULT_AUTO_LIMIT_PER_HOUR = 10
# Changes the customer hears of by email (the ticket's contact), each with its own template.
CUSTOMER_NOTIFICATIONS = {"closed": "their ticket is closed", "reopened": "their ticket is reopened",
                          "owner_changed": "a technician takes their ticket",
                          "priority_changed": "the priority of their ticket changes",
                          "sla_changed": "the target times of their ticket change (priority or SLA policy)"}
SETTING_DEFAULTS = {"block_outgoing": False, "override_recipient": None,
                    "auto_mail_limit_per_hour": DEFAULT_AUTO_LIMIT_PER_HOUR,
                    "customer_notifications": ["closed", "reopened"]}


def get_setting(key: str, msp_id: int | None = None):
    """The value in effect for this MSP (its own, else the installation's); msp_id None: the
    installation's (else the built-in default)."""
    if msp_id is not None:
        own = db.session.get(MspSetting, (msp_id, key))
        if own is not None:
            return own.value
    row = db.session.get(Setting, key)
    return row.value if row is not None else SETTING_DEFAULTS[key]


def msp_own_settings(msp_id: int) -> dict:
    """The MSP's own values only (a key left out: it inherits the installation's)."""
    rows = {r.key: r.value for r in db.session.scalars(select(MspSetting).where(MspSetting.msp_id == msp_id))}
    return {k: rows[k] for k in SETTING_DEFAULTS if k in rows}  # in the file's order


def customer_notifications(client: Client) -> list[str]:
    """Which changes the customers of this client hear of: its own choice, else its nearest
    ancestor's, else its MSP's mail setting."""
    return customer_notifications_in_effect(client)[0]


def customer_notifications_in_effect(client: Client) -> tuple[list[str], Client | None]:
    """(customer_notifications(client), the client whose choice it is; None: the mail settings')."""
    node = client
    while node is not None:
        if node.customer_notifications is not None:
            return node.customer_notifications, node
        node = node.parent
    return get_setting("customer_notifications", client.msp_id or client.id), None


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


def _checked_value(key: str, value, errors: dict[str, list[str]]):
    """One setting as saved, from what a form or the configuration file gives."""
    if key == "block_outgoing":
        if value is not None and not isinstance(value, bool):  # None: a form's unticked box
            errors[key] = ["This is true or false."]
        return bool(value)
    if key == "auto_mail_limit_per_hour":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            errors[key] = ["The limit is a whole number from 1 to 1000."]
        return value
    if key == "override_recipient":
        override = (str(value or "")).strip() or None
        if override:
            try:
                override = normalise_address(override)
            except AllowEntryError as exc:
                errors[key] = [str(exc)]
        return override
    return checked_notifications(value, errors, key)


def checked_notifications(value, errors: dict[str, list[str]], field: str = "customer_notifications") -> list[str]:
    """A choice of customer notifications, in the order of CUSTOMER_NOTIFICATIONS."""
    notifications = value or ()
    if isinstance(notifications, str) or not all(isinstance(e, str) for e in notifications):
        errors[field] = ["This is a list of: " + ", ".join(CUSTOMER_NOTIFICATIONS) + "."]
        return []
    if unknown := sorted(set(notifications) - set(CUSTOMER_NOTIFICATIONS)):
        errors[field] = [f"Unknown: {', '.join(unknown)}. Known: {', '.join(CUSTOMER_NOTIFICATIONS)}."]
    return [e for e in CUSTOMER_NOTIFICATIONS if e in notifications]


def _checked_settings(values: dict, errors: dict[str, list[str]]) -> dict:
    """Every switch as saved, from what a form or the configuration file gives."""
    return {k: _checked_value(k, values.get(k), errors) for k in SETTING_DEFAULTS}


def _apply_settings(clean: dict) -> dict[str, list]:
    before = {k: get_setting(k) for k in SETTING_DEFAULTS}
    for key, value in clean.items():
        set_setting(key, value)
    return audit.diff(before, {k: get_setting(k) for k in SETTING_DEFAULTS})


def save_settings(values: dict, *, actor) -> dict[str, list]:
    """The switches alone (the configuration file's `mail_settings`): what is left out keeps its
    value. Audited; returns the changes."""
    errors: dict[str, list[str]] = {}
    clean = _checked_settings({**{k: get_setting(k) for k in SETTING_DEFAULTS}, **values}, errors)
    if errors:
        raise ValidationError(errors)
    changes = _apply_settings(clean)
    if changes and actor is not None:  # the command line's changes have no MSP's history to go in
        audit.record(actor, actor.msp_id, "installation", 0, "mail settings", changes)
    return changes


def save_mail_settings(values: dict, *, keys: str, actor) -> None:
    """The default gateway and the switches from the settings page, audited."""
    errors: dict[str, list[str]] = {}
    clean = _checked_settings(values, errors)
    gateway = {k: values.get(k) for k in ("host", "port", "security", "username", "password", "from", "verify_tls")
               if k in values}
    if gateway.get("host"):
        try:
            save_smtp_server(gateway, keys=keys)
        except ValidationError as exc:
            errors.update(exc.errors)
    if errors:
        raise ValidationError(errors)
    changes = _apply_settings(clean)
    if gateway.get("host"):
        changes["gateway"] = [None, f"{gateway['host']}:{gateway['port'] or ''}"]
    if changes:
        audit.record(actor, actor.msp_id, "installation", 0, "mail settings", changes)


# --- an MSP's own values ----------------------------------------------------------------------------------

INHERITED = "(inherited)"


def _own_snapshot(msp_id: int) -> dict:
    own = msp_own_settings(msp_id)
    return {k: own.get(k, INHERITED) for k in SETTING_DEFAULTS}


def save_msp_settings(msp: Client, own: dict, *, actor) -> dict[str, list]:
    """The MSP's own values, exactly: a key left out of `own` goes back to inheriting the
    installation's value. Checked as the installation's are; audited on the MSP; returns the changes."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(str(k) for k in own if k not in SETTING_DEFAULTS)
    if unknown:
        errors[""] = [f"Unknown settings: {', '.join(unknown)}. Known: {', '.join(SETTING_DEFAULTS)}."]
    clean = {k: _checked_value(k, own[k], errors) for k in SETTING_DEFAULTS if k in own}
    if errors:
        raise ValidationError(errors)
    before = _own_snapshot(msp.id)
    rows = {r.key: r for r in db.session.scalars(select(MspSetting).where(MspSetting.msp_id == msp.id))}
    for key in SETTING_DEFAULTS:
        row = rows.get(key)
        if key not in clean:
            if row is not None:
                db.session.delete(row)
        elif row is None:
            db.session.add(MspSetting(msp_id=msp.id, key=key, value=clean[key]))
        elif row.value != clean[key]:
            row.value = clean[key]
    db.session.flush()
    changes = audit.diff(before, _own_snapshot(msp.id))
    if changes:
        audit.record(actor, msp.id, "client", msp.id, "mail settings changed", changes)
    return changes


def save_client_notifications(client: Client, value: list[str] | None, *, actor) -> dict[str, list]:
    """A client's own choice of customer notifications; None: inherited from its parent (the
    MSP: from its mail settings). Audited on the client; returns the changes."""
    errors: dict[str, list[str]] = {}
    clean = None if value is None else checked_notifications(value, errors)
    if errors:
        raise ValidationError(errors)
    before = client.customer_notifications
    if before == clean:
        return {}
    client.customer_notifications = clean
    db.session.flush()
    changes = {"customer notifications": [INHERITED if before is None else before,
                                          INHERITED if clean is None else clean]}
    audit.record(actor, client.msp_id or client.id, "client", client.id, "customer notifications changed", changes)
    return changes

"""Configuration as code: the YAML of `flask config import/export` (and later the portal's
import/export page). Import is idempotent: clients are matched by name within their MSP,
users by email, mailboxes by address; what matches is updated, the rest created."""

from __future__ import annotations

from datetime import date
from typing import Any

import yaml
from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Mailbox, SmtpServer, User
from portal.services import ValidationError
from portal.services import clients as client_svc
from portal.services import mailboxes as mailbox_svc
from portal.services import outbound as outbound_svc
from portal.services import users as user_svc

MAILBOX_KEYS = (
    "name", "status", "direction", "protocol", "host", "port", "security", "username", "shared_mailbox",
    "verify_tls", "folders", "after_action", "processed_folder", "aliases", "response_address", "acknowledge",
    "alert_recipients", "default_status", "default_priority", "default_type", "ignore_senders", "ignore_subjects",
    "plus_addressing", "keep_raw_attachment", "poll_interval", "timeout", "max_tries", "cool_off", "skip_windows",
    "sync_start_date",
)
ROUTE_KEYS = ("recipients", "senders", "subject_keywords", "attachment_types", "high_importance_only",
              "fallback", "enabled", "acknowledge", "acknowledge_cc", "default_status", "default_priority",
              "default_type")


class ConfigError(ValidationError):
    pass


def _fail(where: str, exc: ValidationError) -> ConfigError:
    return ConfigError({where + (f".{k}" if k else ""): v for k, v in exc.errors.items()})


def load(text: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError({"": [f"The file is not valid YAML: {exc}"]}) from None
    if not isinstance(data, dict):
        raise ConfigError({"": ["The file must be a mapping with clients, users and mailboxes."]})
    unknown = set(data) - {"clients", "users", "mailboxes", "smtp"}
    if unknown:
        raise ConfigError({"": [f"Unknown top-level keys: {', '.join(sorted(unknown))}."]})
    return data


def import_config(data: dict, *, keys: str, actor: User | None = None) -> dict[str, int]:
    """Apply the configuration. Returns counts of created and updated records."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    names: dict[str, Client] = {}

    def note(created: bool, changed: bool) -> None:
        counts["created" if created else ("updated" if changed else "unchanged")] += 1

    def walk(items: list, parent: Client | None, msp: Client | None, path: str) -> None:
        for i, item in enumerate(items or []):
            where = f"{path}[{i}]"
            if not isinstance(item, dict) or not item.get("name"):
                raise ConfigError({where: ["Each client needs a name."]})
            data_in = client_svc.ClientInput(
                name=str(item["name"]), code=str(item.get("code") or ""), waterline=str(item.get("waterline") or ""),
                timezone=str(item.get("timezone") or ""), allow=[str(a) for a in item.get("allow") or []],
                reference_prefix=str(item["reference_prefix"]) if parent is None and item.get("reference_prefix") else None,
            )
            try:
                if parent is None:
                    client = client_svc.get_msp_by_name(data_in.name.strip())
                    created = client is None
                    if created:
                        client = client_svc.create_msp(data_in, actor)
                        changed = True
                    else:
                        changed = bool(client_svc.update_client(client, data_in, actor))
                else:
                    client = client_svc.get_client_by_name(msp.id, " ".join(data_in.name.split()))
                    created = client is None
                    if created:
                        client = client_svc.create_client(parent, data_in, actor)
                        changed = True
                    else:
                        if client.parent_id != parent.id:
                            client_svc.move_client(client, parent, actor)
                        changed = bool(client_svc.update_client(client, data_in, actor))
                if "disabled" in item:
                    changed = client_svc.set_client_disabled(client, bool(item["disabled"]), actor) or changed
            except ValidationError as exc:
                raise _fail(where, exc) from None
            note(created, changed)
            if client.name in names and names[client.name].id != client.id:
                raise ConfigError({where: [f"Two clients are called {client.name}; names must be unique."]})
            names[client.name] = client
            walk(item.get("children") or [], client, msp or client, where + ".children")

    walk(data.get("clients") or [], None, None, "clients")

    def client_named(name: Any, where: str) -> Client:
        if name in names:
            return names[name]
        found = db.session.scalars(select(Client).where(Client.name == str(name))).all()
        if len(found) != 1:
            raise ConfigError({where: [f"No single client is called {name!r}."]})
        return found[0]

    for i, item in enumerate(data.get("users") or []):
        where = f"users[{i}]"
        email = str(item.get("email", "")).strip().lower()
        msp = client_named(item.get("client"), where + ".client")
        msp = db.session.get(Client, msp.msp_id)
        user = user_svc.get_user_by_email(email)
        try:
            if user is None:
                user_svc.create_user(msp, email, str(item.get("password") or ""), str(item.get("role", "technician")),
                                     actor, name=str(item.get("name") or ""))
                note(True, True)
            else:
                if user.msp_id != msp.id:
                    raise ValidationError({"email": [f"{email} belongs to another MSP."]})
                changed = False
                if item.get("role") and item["role"] != user.role:
                    if item["role"] not in ("admin", "technician"):
                        raise ValidationError({"role": ["The role is admin or technician."]})
                    user.role, changed = item["role"], True
                if item.get("password") and not user.check_password(str(item["password"])):
                    user.set_password(str(item["password"]))
                    changed = True
                note(False, changed)
        except ValidationError as exc:
            raise _fail(where, exc) from None

    for i, item in enumerate(data.get("mailboxes") or []):
        where = f"mailboxes[{i}]"
        client = client_named(item.get("client"), where + ".client")
        msp = db.session.get(Client, client.msp_id)
        values = {k: item[k] for k in MAILBOX_KEYS if k in item}
        values["address"] = str(item.get("address", ""))
        if values.get("plus_addressing") is False:  # YAML 1.1 reads a bare `off` as false
            values["plus_addressing"] = "off"
        if "sync_start_date" in values and isinstance(values["sync_start_date"], date):
            values["sync_start_date"] = values["sync_start_date"].isoformat()
        if item.get("password"):
            values["password"] = str(item["password"])
        routes = None
        if "routes" in item:
            routes = []
            for j, r in enumerate(item["routes"] or []):
                route_client = client_named(r.get("client"), f"{where}.routes[{j}].client")
                routes.append(mailbox_svc.RouteInput(name=str(r.get("name", "")), client=route_client,
                                                     **{k: r[k] for k in ROUTE_KEYS if k in r}))
        existing = mailbox_svc.get_mailbox_by_address(values["address"]) if values["address"] else None
        if existing is not None and existing.msp_id != msp.id:
            raise ConfigError({where: [f"{values['address']} belongs to another MSP."]})
        if existing is not None and values.get("password") and mailbox_svc.password_of(existing, keys) == values["password"]:
            values.pop("password")  # unchanged: do not re-encrypt (and do not count it as a change)
        try:
            mailbox, changes = mailbox_svc.save_mailbox(msp, client, values, keys=keys, actor=actor,
                                                        routes=routes, mailbox=existing)
            if item.get("outgoing"):
                _server, out_changed = outbound_svc.save_smtp_server(dict(item["outgoing"]), keys=keys,
                                                                     mailbox=mailbox)
                changes = changes or out_changed
        except ValidationError as exc:
            raise _fail(where, exc) from None
        note(existing is None, bool(changes))
    if data.get("smtp"):
        try:
            _server, changed = outbound_svc.save_smtp_server(dict(data["smtp"]), keys=keys)
        except ValidationError as exc:
            raise _fail("smtp", exc) from None
        note(False, changed)
    db.session.flush()
    return counts


def export_config(*, keys: str, with_secrets: bool = False) -> dict:
    out: dict[str, list] = {"clients": [], "users": [], "mailboxes": []}
    all_clients = db.session.scalars(select(Client).order_by(Client.name)).all()
    kids: dict[int | None, list[Client]] = {}
    for c in all_clients:
        kids.setdefault(c.parent_id, []).append(c)

    def node(c: Client) -> dict:
        item: dict[str, Any] = {"name": c.name}
        if c.code:
            item["code"] = c.code
        if c.is_msp:
            item["reference_prefix"] = c.reference_prefix
        if c.waterline:
            item["waterline"] = c.waterline
        if c.timezone:
            item["timezone"] = c.timezone
        item["allow"] = [e.value for e in c.allow_entries]
        if c.disabled:
            item["disabled"] = True
        children = [node(k) for k in kids.get(c.id, [])]
        if children:
            item["children"] = children
        return item

    out["clients"] = [node(c) for c in kids.get(None, [])]
    for u in db.session.scalars(select(User).order_by(User.email)):
        out["users"].append({"email": u.email, "name": u.name, "role": u.role, "client": u.msp.name})
    for m in db.session.scalars(select(Mailbox).order_by(Mailbox.address)):
        item: dict[str, Any] = {"address": m.address, "client": m.client.name}
        for k in MAILBOX_KEYS:
            value = getattr(m, k)
            item[k] = value.isoformat() if isinstance(value, date) else value
        if with_secrets and m.password_encrypted:
            item["password"] = mailbox_svc.password_of(m, keys)
        item["routes"] = [
            {"name": r.name, "client": r.client.name, **{k: getattr(r, k) for k in ROUTE_KEYS}} for r in m.routes
        ]
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == m.id))
        if own is not None:
            item["outgoing"] = outbound_svc.smtp_server_as_config(own, keys, with_secrets)
        out["mailboxes"].append(item)
    gateway = outbound_svc.default_gateway()
    if gateway is not None:
        out["smtp"] = outbound_svc.smtp_server_as_config(gateway, keys, with_secrets)
    return out


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

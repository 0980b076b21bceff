"""Writing the configuration file: everything an admin sets, section by section, in the format
that import_config reads back. Secrets only `with_secrets`; never a token or any other state."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Mailbox, SmtpServer, User
from portal.outbound import servers as outbound_svc
from portal.outbound import settings as settings_svc
from portal.inbound.retention import RETENTION_KEYS
from portal.services import clients as client_svc
from portal.services import mailbox_oauth, microsoft_app
from portal.services import mailboxes as mailbox_svc
from portal.services import custom_fields
from portal.services.config_io.fileformat import CUSTOM_FIELD_KEYS, GRAPH_LEAVES_OUT, MAILBOX_KEYS, ROUTE_KEYS
from portal.services.config_io.messages import export_canned, export_layouts, export_mail_settings, export_templates
from portal.services.config_io.sla import export_policies, policy_name, policy_names


def export_config(*, keys: str, with_secrets: bool = False, msp_id: int | None = None,
                  include_gateway: bool = True) -> dict:
    """Everything, or with `msp_id` only that MSP's tree (the portal's page). `include_gateway`
    False leaves out what serves the whole installation (smtp, mail_settings)."""
    all_clients = db.session.scalars(select(Client).where(*_in_scope(Client, msp_id)).order_by(Client.name)).all()
    names = policy_names(msp_id)
    out: dict[str, Any] = {"clients": _client_tree(all_clients, keys, with_secrets, names), "users": _users(msp_id),
                           "mailboxes": _mailboxes(msp_id, keys, with_secrets, names)}
    apps = [(c.name, item) for c in all_clients if c.is_msp
            if (item := microsoft_app.as_config(c.id, keys, with_secrets)) is not None]
    several = msp_id is None and client_svc.msp_count() > 1
    if apps:  # one MSP's file holds its app; the whole installation's names each app's MSP
        out["microsoft_app"] = [{"msp": name, **item} for name, item in apps] if several else apps[0][1]
    if layouts := export_layouts(msp_id):
        out["email_layouts"] = layouts
    out["email_templates"] = export_templates(msp_id)
    out["canned_responses"] = export_canned(msp_id)
    if include_gateway:
        gateway = outbound_svc.installation_gateway()
        if gateway is not None:
            out["smtp"] = outbound_svc.smtp_server_as_config(gateway, keys, with_secrets)
        out["mail_settings"] = export_mail_settings()
    return out


def _in_scope(model, msp_id: int | None) -> list:
    return [model.msp_id == msp_id] if msp_id is not None else []


def _client_tree(all_clients: list[Client], keys: str, with_secrets: bool, policies: dict[int, str]) -> list[dict]:
    kids: dict[int | None, list[Client]] = {}
    for c in all_clients:
        kids.setdefault(c.parent_id, []).append(c)

    def node(c: Client) -> dict:
        item: dict[str, Any] = {"name": c.name}
        if c.code:
            item["code"] = c.code
        if c.is_msp:
            item["reference_prefix"] = c.reference_prefix
            item.update({k: getattr(c, k) for k in RETENTION_KEYS if getattr(c, k) is not None})
            if c.ticket_types:
                item["ticket_types"] = list(c.ticket_types)
            if fields := custom_fields.list_fields(c.id):
                item["custom_fields"] = [{k: getattr(f, k) for k in CUSTOM_FIELD_KEYS} for f in fields]
            if own := export_policies(c.id):
                item["sla_policies"] = own
        if chosen := policy_name(c, policies):
            item["sla_policy"] = chosen
        if c.waterline:
            item["waterline"] = c.waterline
        if c.timezone:
            item["timezone"] = c.timezone
        if c.language:
            item["language"] = c.language
        item["allow"] = [e.value for e in c.allow_entries]
        if c.disabled:
            item["disabled"] = True
        if c.customer_notifications is not None:
            item["customer_notifications"] = c.customer_notifications
        if c.is_msp:  # its own mail settings and gateway; what it leaves out, it inherits
            if own := settings_svc.msp_own_settings(c.id):
                item["mail_settings"] = own
            if (gateway := outbound_svc.msp_gateway(c.id)) is not None:
                item["outgoing"] = outbound_svc.smtp_server_as_config(gateway, keys, with_secrets)
        children = [node(k) for k in kids.get(c.id, [])]
        if children:
            item["children"] = children
        return item

    return [node(c) for c in kids.get(None, [])]


def _users(msp_id: int | None) -> list[dict]:
    out = []
    for u in db.session.scalars(select(User).where(*_in_scope(User, msp_id)).order_by(User.email)):
        item = {"email": u.email, "name": u.name, "role": u.role, "client": u.msp.name}
        if u.disabled:
            item["disabled"] = True
        out.append(item)
    return out


def _mailboxes(msp_id: int | None, keys: str, with_secrets: bool, policies: dict[int, str]) -> list[dict]:
    out = []
    for m in db.session.scalars(select(Mailbox).where(*_in_scope(Mailbox, msp_id)).order_by(Mailbox.address)):
        item: dict[str, Any] = {"address": m.address, "client": m.client.name}
        for k in MAILBOX_KEYS:
            value = getattr(m, k)
            if (m.protocol == "graph" and k in GRAPH_LEAVES_OUT) or (k == "api_url" and value is None):
                continue
            item[k] = value.isoformat() if isinstance(value, date) else value
        if with_secrets and m.password_encrypted:
            item["password"] = mailbox_svc.password_of(m, keys)
        if m.oauth is not None:  # never a token: a grant is state, not configuration
            item["oauth"] = mailbox_oauth.as_config(m.oauth, keys, with_secrets)
        if chosen := policy_name(m, policies):
            item["sla_policy"] = chosen
        item["routes"] = [
            {"name": r.name, "client": r.client.name, **{k: getattr(r, k) for k in ROUTE_KEYS},
             **({"sla_policy": policy_name(r, policies)} if r.sla_policy_id else {})} for r in m.routes
        ]
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == m.id))
        if own is not None:
            item["outgoing"] = outbound_svc.smtp_server_as_config(own, keys, with_secrets)
        out.append(item)
    return out

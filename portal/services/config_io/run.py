"""Applying a configuration file, section by section, through the services that the portal's
pages use (the same checks, the same history). Clients are matched by name within their MSP,
users by email, mailboxes by address, templates by client and event, canned responses by client
and name; what matches is updated, the rest created, nothing deleted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, User
from portal.outbound import servers as outbound_svc
from portal.outbound import settings as settings_svc
from portal.services import ValidationError
from portal.services import custom_fields
from portal.services import clients as client_svc
from portal.services import mailboxes as mailbox_svc
from portal.services import microsoft_app
from portal.services import users as user_svc
from portal.inbound.retention import RETENTION_KEYS, save_retention
from portal.services.config_io.fileformat import INVITED_NOT_PASSWORD, MAILBOX_KEYS, ROUTE_KEYS, ConfigError, fail
from portal.services.config_io.sla import choose_named, import_policies
from portal.services.routes import RouteInput


@dataclass
class Import:
    """One run of import_config, section by section: what it counted, and the clients it has met
    by name (users, mailboxes, routes, templates and canned responses name their client)."""

    keys: str
    actor: User | None
    scope: Client | None  # the portal's page: the MSP everything must belong to
    report: list[tuple[str, str, str]] | None
    counts: dict[str, int] = field(default_factory=lambda: {"created": 0, "updated": 0, "unchanged": 0})
    names: dict[str, Client] = field(default_factory=dict)

    def note(self, created: bool, changed: bool, kind: str = "", label: str = "") -> None:
        outcome = "created" if created else ("updated" if changed else "unchanged")
        self.counts[outcome] += 1
        if self.report is not None:
            self.report.append((kind, label, outcome))

    def clients(self, items: list, parent: Client | None, msp: Client | None, path: str) -> None:
        scope, actor = self.scope, self.actor
        for i, item in enumerate(items or []):
            where = f"{path}[{i}]"
            if not isinstance(item, dict) or not item.get("name"):
                raise ConfigError({where: ["Each client needs a name."]})
            data_in = client_svc.ClientInput(
                name=str(item["name"]), code=str(item.get("code") or ""), waterline=str(item.get("waterline") or ""),
                timezone=str(item.get("timezone") or ""), language=str(item.get("language") or ""), allow=[str(a) for a in item.get("allow") or []],
                reference_prefix=str(item["reference_prefix"]) if parent is None and item.get("reference_prefix") else None,
            )
            try:
                if parent is None and scope is not None:
                    if data_in.name.strip() != scope.name:
                        raise ConfigError({where + ".name": [
                            f"The top-level client must be your MSP, {scope.name}; {data_in.name!r} is not."]})
                    client, created = scope, False
                    changed = bool(client_svc.update_client(client, data_in, actor))
                elif parent is None:
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
                if parent is None:  # an MSP's retention: what the file leaves out is off
                    retention = {k: item.get(k) for k in RETENTION_KEYS}
                    changed = bool(save_retention(client, retention, actor)) or changed
                    changed = custom_fields.save_ticket_types(
                        client, [str(t) for t in item.get("ticket_types") or []], actor=actor) or changed
                    changed = custom_fields.import_fields(client, item.get("custom_fields") or [], actor=actor) \
                        or changed
                    # Its SLA policies before any client of its tree chooses one by name.
                    for name, made, altered in import_policies(client, item.get("sla_policies") or [], actor,
                                                                where + ".sla_policies"):
                        self.note(made, altered, "SLA policy", name)
                # Left out: the client inherits its parent's, as a waterline left out is inherited.
                changed = choose_named(client, item.get("sla_policy"), client.msp_id, actor,
                                       where + ".sla_policy") or changed
                changed = self.mail_settings(client, item, parent is None) or changed
            except ValidationError as exc:
                raise fail(where, exc) from None
            self.note(created, changed, "client", client.name)
            if client.name in self.names and self.names[client.name].id != client.id:
                raise ConfigError({where: [f"Two clients are called {client.name}; names must be unique."]})
            self.names[client.name] = client
            self.clients(item.get("children") or [], client, msp or client, where + ".children")

    def mail_settings(self, client: Client, item: dict, is_msp: bool) -> bool:
        """A client's customer notifications (left out: inherited); an MSP's own mail settings
        (exactly those given; the section left out: unchanged) and its own gateway (given: saved)."""
        if not is_msp and ("mail_settings" in item or "outgoing" in item):
            raise ValidationError({"mail_settings" if "mail_settings" in item else "outgoing": [
                "Only an MSP (a top-level entry) has its own mail settings and gateway."]})
        changed = bool(settings_svc.save_client_notifications(client, item.get("customer_notifications"),
                                                              actor=self.actor))
        if "mail_settings" in item:
            own = item["mail_settings"]
            if not isinstance(own, dict):
                raise ValidationError({"mail_settings": ["This must be a mapping (" + ", ".join(
                    settings_svc.SETTING_DEFAULTS) + ")."]})
            changed = bool(settings_svc.save_msp_settings(client, dict(own), actor=self.actor)) or changed
        if item.get("outgoing"):
            if not isinstance(item["outgoing"], dict):
                raise ValidationError({"outgoing": ["This must be a mapping (host, port, security, ...)."]})
            try:
                changed = bool(outbound_svc.save_msp_gateway(client.id, dict(item["outgoing"]), keys=self.keys,
                                                             actor=self.actor)) or changed
            except ValidationError as exc:
                raise ValidationError({f"outgoing.{k}" if k else "outgoing": v for k, v in exc.errors.items()}) from None
        return changed

    def client_named(self, name: Any, where: str) -> Client:
        scope = self.scope
        if name in self.names:
            return self.names[name]
        query = select(Client).where(Client.name == str(name))
        if scope is not None:
            query = query.where(Client.msp_id == scope.id)
        found = db.session.scalars(query).all()
        if len(found) != 1:
            inside = f" in {scope.name}" if scope is not None else ""
            raise ConfigError({where: [f"No single client is called {name!r}{inside}."]})
        return found[0]

    def users(self, items: list) -> None:
        for i, item in enumerate(items):
            where = f"users[{i}]"
            email = str(item.get("email", "")).strip().lower()
            msp = self.client_named(item.get("client"), where + ".client")
            msp = db.session.get(Client, msp.msp_id)
            try:
                user = user_svc.get_user_in_msp(msp.id, email)
                created, changed = user is None, False
                if user is None:
                    user = self.new_user(msp, email, item)
                else:
                    changed = self.user_changes(user, item)
                if "disabled" in item:  # the users page's rules: audited, never the last admin
                    changed = user_svc.set_user_disabled(user, bool(item["disabled"]), self.actor) or changed
            except ValidationError as exc:
                raise fail(where, exc) from None
            self.note(created, changed, "user", email)

    def new_user(self, msp: Client, email: str, item: dict) -> User:
        """With a password (the command line only): an account. Without: an invited user, who
        sets a password through the invitation link (sent from the Users page)."""
        name, role, password = str(item.get("name") or ""), str(item.get("role", "technician")), item.get("password")
        if password and self.scope is not None:
            raise ValidationError({"password": [INVITED_NOT_PASSWORD]})
        if password:
            return user_svc.create_user(msp, email, str(password), role, self.actor, name=name)
        return user_svc.invite_user(msp, email, name, role, self.actor)

    def user_changes(self, user: User, item: dict) -> bool:
        changed = False
        if item.get("role") and item["role"] != user.role:
            # The same rules as the users page: audited, and never the last admin away.
            changed = user_svc.change_role(user, str(item["role"]), self.actor)
        if item.get("password") and self.scope is not None and user_svc.invitation_pending(user):
            raise ValidationError({"password": [INVITED_NOT_PASSWORD]})
        if item.get("password") and not user.check_password(str(item["password"])):
            user.set_password(str(item["password"]))
            changed = True
        return changed

    def mailboxes(self, items: list) -> None:
        keys = self.keys
        for i, item in enumerate(items):
            where = f"mailboxes[{i}]"
            client = self.client_named(item.get("client"), where + ".client")
            msp = db.session.get(Client, client.msp_id)
            values = {k: item[k] for k in MAILBOX_KEYS if k in item}
            values["address"] = str(item.get("address", ""))
            if values.get("plus_addressing") is False:  # YAML 1.1 reads a bare `off` as false
                values["plus_addressing"] = "off"
            if "sync_start_date" in values and isinstance(values["sync_start_date"], date):
                values["sync_start_date"] = values["sync_start_date"].isoformat()
            if item.get("password"):
                values["password"] = str(item["password"])
            if item.get("oauth") is not None:  # checked by the service; its messages name oauth.<key>
                values["oauth"] = dict(item["oauth"]) if isinstance(item["oauth"], dict) else item["oauth"]
            routes = None
            if "routes" in item:
                routes = []
                for j, r in enumerate(item["routes"] or []):
                    route_client = self.client_named(r.get("client"), f"{where}.routes[{j}].client")
                    routes.append(RouteInput(name=str(r.get("name", "")), client=route_client,
                                              **{k: r[k] for k in ROUTE_KEYS if k in r}))
            try:
                existing = mailbox_svc.get_mailbox_by_address(values["address"], msp.id) if values["address"] else None
            except ValidationError as exc:
                raise fail(where, exc) from None
            # save_mailbox makes the routes again: what each chose before, to tell a change from none.
            chosen_before = {r.name: r.sla_policy_id for r in existing.routes} if existing is not None else {}
            try:
                mailbox, changes = mailbox_svc.save_mailbox(msp, client, values, keys=keys, actor=self.actor,
                                                            routes=routes, mailbox=existing)
                if item.get("outgoing"):
                    _server, out_changed = outbound_svc.save_smtp_server(dict(item["outgoing"]), keys=keys,
                                                                         mailbox=mailbox)
                    changes = changes or out_changed
                changes = self.mailbox_policies(mailbox, item, where, chosen_before) or changes
            except ValidationError as exc:
                raise fail(where, exc) from None
            self.note(existing is None, bool(changes), "mailbox", mailbox.address)

    def mailbox_policies(self, mailbox, item: dict, where: str, chosen_before: dict[str, int | None]) -> bool:
        """The SLA policy a mailbox and each of its routes chose, by name (left out: the client's)."""
        changed = False
        if "sla_policy" in item:
            changed = choose_named(mailbox, item["sla_policy"], mailbox.msp_id, self.actor, where + ".sla_policy")
        for j, r in enumerate(item.get("routes") or []):
            route = next((x for x in mailbox.routes if x.name == " ".join(str(r.get("name", "")).split())), None)
            if route is None:
                continue
            if route.name in chosen_before:
                route.sla_policy_id = chosen_before[route.name]  # as it was: no change to record
            changed = choose_named(route, r.get("sla_policy"), mailbox.msp_id, self.actor,
                                   f"{where}.routes[{j}].sla_policy") or changed
        return changed

    def microsoft_apps(self, value: Any) -> None:
        entries = value if isinstance(value, list) else [value]
        for i, item in enumerate(entries):
            where = f"microsoft_app[{i}]" if isinstance(value, list) else "microsoft_app"
            if not isinstance(item, dict):
                raise ConfigError({where: ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]})
            item = dict(item)
            msp = self.msp_owner(item.pop("msp", None), where, "Microsoft 365 app")
            try:
                created, changed = microsoft_app.apply_config(msp, item, keys=self.keys, actor=self.actor)
            except ValidationError as exc:
                raise fail(where, exc) from None
            self.note(created, changed, "Microsoft 365 app", msp.name)

    def msp_owner(self, name: Any, where: str, what: str) -> Client:
        """The MSP an MSP-wide entry (a `microsoft_app`, an email layout) belongs to: the page's, the
        one it names, or the only one."""
        if self.scope is not None:
            if name is not None and str(name).strip() != self.scope.name:
                raise ConfigError({where + ".msp": [f"This file is {self.scope.name}'s; {name!r} is not."]})
            return self.scope
        if name is not None:
            msp = client_svc.get_msp_by_name(str(name))
            if msp is None:
                raise ConfigError({where + ".msp": [f"There is no MSP called {name!r}."]})
            return msp
        in_file = {c.id: c for c in self.names.values() if c.is_msp}
        msps = list(in_file.values()) if len(in_file) == 1 else db.session.scalars(
            select(Client).where(Client.parent_id.is_(None)).limit(2)).all()
        if len(msps) != 1:
            raise ConfigError({where: [f"Several MSPs could own this {what}: say whose with msp: NAME."]})
        return msps[0]

    def gateway(self, smtp: dict, gateway_allowed: bool) -> None:
        if not gateway_allowed:
            raise ConfigError({"smtp": ["The default outgoing gateway serves the whole installation: only an "
                                        "operator can set it. Remove the smtp section."]})
        try:
            _server, changed = outbound_svc.save_smtp_server(dict(smtp), keys=self.keys)
        except ValidationError as exc:
            raise fail("smtp", exc) from None
        self.note(False, changed, "outgoing gateway", str(smtp.get("host", "")))

"""Configuration as code: the YAML of `flask config import/export` (and later the portal's
import/export page). Import is idempotent: clients are matched by name within their MSP,
users by email, mailboxes by address; what matches is updated, the rest created."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import yaml
from flask import current_app
from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, Mailbox, SmtpServer, User
from portal.outbound import servers as outbound_svc
from portal.services import ValidationError
from portal.services import clients as client_svc
from portal.services import mailbox_oauth
from portal.services import mailboxes as mailbox_svc
from portal.services import microsoft_app
from portal.services import users as user_svc
from portal.services.routes import RouteInput

MAILBOX_KEYS = (
    "name", "status", "direction", "protocol", "auth", "host", "port", "security", "username", "shared_mailbox",
    "verify_tls", "folders", "after_action", "processed_folder", "aliases", "response_address", "acknowledge",
    "alert_recipients", "default_status", "default_priority", "default_type", "ignore_senders", "ignore_subjects",
    "plus_addressing", "keep_raw_attachment", "poll_interval", "timeout", "max_tries", "cool_off", "skip_windows",
    "sync_start_date", "api_url", "automatic_mail",
)
# Graph is reached through api_url: a mail server's host, port and security mean nothing there.
GRAPH_LEAVES_OUT = {"host", "port", "security"}
ROUTE_KEYS = ("recipients", "senders", "subject_keywords", "attachment_types", "high_importance_only",
              "fallback", "enabled", "acknowledge", "acknowledge_cc", "default_status", "default_priority",
              "default_type")


# Every key the file may use, per kind of entry: anything else is a typo to point at.
CLIENT_FIELDS = {"name", "code", "waterline", "timezone", "allow", "reference_prefix", "disabled", "children"}
USER_FIELDS = {"email", "name", "role", "client", "password"}
MAILBOX_FIELDS = {"address", "client", "password", "routes", "outgoing", "oauth", *MAILBOX_KEYS}
OAUTH_FIELDS = set(mailbox_oauth.OAUTH_KEYS)
ROUTE_FIELDS = {"name", "client", *ROUTE_KEYS}
SMTP_FIELDS = {"host", "port", "security", "username", "password", "from", "from_address", "timeout", "verify_tls",
               "auth"}
# `msp` names the MSP whose app it is, where the file holds several (the command line's export).
MICROSOFT_APP_FIELDS = {"msp", *microsoft_app.APP_KEYS}
TOP_LEVEL = ("clients", "users", "mailboxes", "smtp", "microsoft_app")


# In the portal, an address that has an account in another MSP must be answered like any other:
# people set their own passwords through their invitation link, and an address has one account.
INVITED_NOT_PASSWORD = ("New and invited users are not given a password here: leave it out, then send each "
                        "the invitation link from the Users page.")


class ConfigError(ValidationError):
    pass


def _fail(where: str, exc: ValidationError) -> ConfigError:
    return ConfigError({where + (f".{k}" if k else ""): v for k, v in exc.errors.items()})


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"The file is not valid YAML: {exc}"
    what = getattr(exc, "problem", None) or "cannot read this"
    return f"The file is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {what}."


MAX_DEPTH = 40


def _limits() -> tuple[int, int]:
    """(bytes, values) a file may hold: TIDEMARK_CONFIG_MAX_BYTES and TIDEMARK_CONFIG_MAX_ENTRIES."""
    return current_app.config["TIDEMARK_CONFIG_MAX_BYTES"], current_app.config["TIDEMARK_CONFIG_MAX_ENTRIES"]


def size_problem(size: int) -> str | None:
    """What is wrong with a file of this many bytes, or None."""
    max_bytes = _limits()[0]
    if size <= max_bytes:
        return None
    limit = f"{max_bytes // 1_000_000} MB" if max_bytes >= 1_000_000 else f"{max(1, max_bytes // 1000)} KB"
    return f"The file is larger than {limit}; a configuration is much smaller."


# libyaml when it is there: the pure-Python parser needs seconds for a file of a megabyte.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_shape(text: str) -> None:
    """Refuse anchors and aliases, too many values and too deep a nesting before anything is
    built: a few hundred bytes of nested aliases stand for millions of entries, each imported."""
    max_values = _limits()[1]
    values = depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        problem = None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            problem = ("the file uses YAML anchors and aliases (& and *), which the import does not accept. "
                       "Write each entry out in full.")
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            values += 1
            if values > max_values:
                problem = f"the file holds more than {max_values} entries and values. Split it into smaller files."
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    problem = f"the file is nested too deeply (more than {MAX_DEPTH} levels)."
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if problem:
            mark = event.start_mark
            raise ConfigError({"": [f"Line {mark.line + 1}, column {mark.column + 1}: {problem}"]})


def load(text: str, *, strict: bool = False) -> dict:
    """The parsed file. `strict` also refuses keys the import does not know (typos would
    otherwise be ignored without a word). Too big a file, anchors and aliases, too many values
    and too deep a nesting are refused before anything is built."""
    if problem := size_problem(len(text.encode("utf-8", "surrogatepass"))):
        raise ConfigError({"": [problem]})
    try:
        _check_shape(text)
        data = yaml.load(text, Loader=_SafeLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError({"": [_yaml_problem(exc)]}) from None
    if not isinstance(data, dict):
        raise ConfigError({"": ["The file must be a mapping with clients, users and mailboxes."]})
    unknown = set(data) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError({"": [f"Unknown top-level keys: {', '.join(sorted(map(str, unknown)))}."]})
    if strict and (problems := unknown_fields(data)):
        raise ConfigError(problems)
    return data


def unknown_fields(data: dict) -> dict[str, list[str]]:
    """Where the file has the wrong shape or a key that nothing reads: path -> messages."""
    problems: dict[str, list[str]] = {}

    def entries(value: Any, where: str, fields: set[str]) -> list[tuple[str, dict]]:
        if value is None:
            return []
        if not isinstance(value, list):
            problems[where] = ["This must be a list (entries starting with -)."]
            return []
        found = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(item, dict):
                problems[at] = ["Each entry must be a mapping of keys and values."]
                continue
            check(item, at, fields)
            found.append((at, item))
        return found

    def check(item: dict, where: str, fields: set[str]) -> None:
        extra = sorted(str(k) for k in item if k not in fields)
        if extra:
            problems[where] = [f"Unknown field{'s' if len(extra) > 1 else ''}: {', '.join(extra)}. "
                               f"Known: {', '.join(sorted(fields))}."]

    def clients(value: Any, where: str) -> None:
        for at, item in entries(value, where, CLIENT_FIELDS):
            clients(item.get("children"), at + ".children")

    clients(data.get("clients"), "clients")
    entries(data.get("users"), "users", USER_FIELDS)
    for at, item in entries(data.get("mailboxes"), "mailboxes", MAILBOX_FIELDS):
        entries(item.get("routes"), at + ".routes", ROUTE_FIELDS)
        if isinstance(item.get("outgoing"), dict):
            check(item["outgoing"], at + ".outgoing", SMTP_FIELDS)
        if isinstance(item.get("oauth"), dict):
            check(item["oauth"], at + ".oauth", OAUTH_FIELDS)
    if isinstance(data.get("smtp"), dict):
        check(data["smtp"], "smtp", SMTP_FIELDS)
    elif data.get("smtp") is not None:
        problems["smtp"] = ["This must be a mapping (host, port, security, ...)."]
    apps = data.get("microsoft_app")
    for at, item in ([("microsoft_app", apps)] if isinstance(apps, dict) else
                     [(f"microsoft_app[{i}]", a) for i, a in enumerate(apps)] if isinstance(apps, list) else []):
        if isinstance(item, dict):
            check(item, at, MICROSOFT_APP_FIELDS)
        else:
            problems[at] = ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]
    if apps is not None and not isinstance(apps, (dict, list)):
        problems["microsoft_app"] = ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]
    return problems


def import_config(data: dict, *, keys: str, actor: User | None = None, msp: Client | None = None,
                  gateway_allowed: bool = True, report: list[tuple[str, str, str]] | None = None) -> dict[str, int]:
    """Apply the configuration. Returns counts of created and updated records.
    With `msp` (the portal's page) everything must sit in that MSP's tree; `gateway_allowed`
    False refuses the installation-wide smtp section; `report` collects (kind, name, outcome)."""
    run = _Import(keys=keys, actor=actor, scope=msp, report=report)
    run.clients(data.get("clients") or [], None, None, "clients")
    run.users(data.get("users") or [])
    if data.get("microsoft_app"):  # before the mailboxes: app-only ones may use it
        run.microsoft_apps(data["microsoft_app"])
    run.mailboxes(data.get("mailboxes") or [])
    if data.get("smtp"):
        run.gateway(data["smtp"], gateway_allowed)
    db.session.flush()
    return run.counts


@dataclass
class _Import:
    """One run of import_config, section by section: what it counted, and the clients it has met
    by name (users, mailboxes and routes name their client)."""

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
                timezone=str(item.get("timezone") or ""), allow=[str(a) for a in item.get("allow") or []],
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
            except ValidationError as exc:
                raise _fail(where, exc) from None
            self.note(created, changed, "client", client.name)
            if client.name in self.names and self.names[client.name].id != client.id:
                raise ConfigError({where: [f"Two clients are called {client.name}; names must be unique."]})
            self.names[client.name] = client
            self.clients(item.get("children") or [], client, msp or client, where + ".children")

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
        scope, actor = self.scope, self.actor
        for i, item in enumerate(items):
            where = f"users[{i}]"
            email = str(item.get("email", "")).strip().lower()
            msp = self.client_named(item.get("client"), where + ".client")
            msp = db.session.get(Client, msp.msp_id)
            try:
                user = user_svc.get_user_in_msp(msp.id, email)
                if user is None and scope is not None:
                    # The portal: people set their own passwords, through the invitation link.
                    if item.get("password"):
                        raise ValidationError({"password": [INVITED_NOT_PASSWORD]})
                    user_svc.invite_user(msp, email, str(item.get("name") or ""), str(item.get("role", "technician")),
                                         actor)
                    self.note(True, True, "user", email)
                elif user is None:
                    user_svc.create_user(msp, email, str(item.get("password") or ""),
                                         str(item.get("role", "technician")), actor, name=str(item.get("name") or ""))
                    self.note(True, True, "user", email)
                else:
                    changed = False
                    if item.get("role") and item["role"] != user.role:
                        # The same rules as the users page: audited, and never the last admin away.
                        changed = user_svc.change_role(user, str(item["role"]), actor)
                    if item.get("password") and scope is not None and user_svc.invitation_pending(user):
                        raise ValidationError({"password": [INVITED_NOT_PASSWORD]})
                    if item.get("password") and not user.check_password(str(item["password"])):
                        user.set_password(str(item["password"]))
                        changed = True
                    self.note(False, changed, "user", email)
            except ValidationError as exc:
                raise _fail(where, exc) from None

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
                raise _fail(where, exc) from None
            try:
                mailbox, changes = mailbox_svc.save_mailbox(msp, client, values, keys=keys, actor=self.actor,
                                                            routes=routes, mailbox=existing)
                if item.get("outgoing"):
                    _server, out_changed = outbound_svc.save_smtp_server(dict(item["outgoing"]), keys=keys,
                                                                         mailbox=mailbox)
                    changes = changes or out_changed
            except ValidationError as exc:
                raise _fail(where, exc) from None
            self.note(existing is None, bool(changes), "mailbox", mailbox.address)

    def microsoft_apps(self, value: Any) -> None:
        entries = value if isinstance(value, list) else [value]
        for i, item in enumerate(entries):
            where = f"microsoft_app[{i}]" if isinstance(value, list) else "microsoft_app"
            if not isinstance(item, dict):
                raise ConfigError({where: ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]})
            item = dict(item)
            msp = self.app_owner(item.pop("msp", None), where)
            try:
                created, changed = microsoft_app.apply_config(msp, item, keys=self.keys, actor=self.actor)
            except ValidationError as exc:
                raise _fail(where, exc) from None
            self.note(created, changed, "Microsoft 365 app", msp.name)

    def app_owner(self, name: Any, where: str) -> Client:
        """The MSP a `microsoft_app` belongs to: the page's, the one it names, or the only one."""
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
            raise ConfigError({where: ["Several MSPs could own this Microsoft 365 app: say whose with msp: NAME."]})
        return msps[0]

    def gateway(self, smtp: dict, gateway_allowed: bool) -> None:
        if not gateway_allowed:
            raise ConfigError({"smtp": ["The default outgoing gateway serves the whole installation: only an "
                                        "operator can set it. Remove the smtp section."]})
        try:
            _server, changed = outbound_svc.save_smtp_server(dict(smtp), keys=self.keys)
        except ValidationError as exc:
            raise _fail("smtp", exc) from None
        self.note(False, changed, "outgoing gateway", str(smtp.get("host", "")))


def preview_import(data: dict, *, keys: str, actor: User | None = None, msp: Client | None = None,
                   gateway_allowed: bool = True) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """A dry run: the import inside a savepoint that is always rolled back. Returns the counts
    and what would happen to each entry; errors are raised exactly as the real import would."""
    report: list[tuple[str, str, str]] = []
    savepoint = db.session.begin_nested()
    try:
        counts = import_config(data, keys=keys, actor=actor, msp=msp, gateway_allowed=gateway_allowed,
                               report=report)
    finally:
        savepoint.rollback()
    return counts, report


def export_config(*, keys: str, with_secrets: bool = False, msp_id: int | None = None,
                  include_gateway: bool = True) -> dict:
    """Everything, or with `msp_id` only that MSP's tree (the portal's page)."""
    out: dict[str, list] = {"clients": [], "users": [], "mailboxes": []}

    def in_scope(model) -> list:
        return [model.msp_id == msp_id] if msp_id is not None else []

    all_clients = db.session.scalars(select(Client).where(*in_scope(Client)).order_by(Client.name)).all()
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
    for u in db.session.scalars(select(User).where(*in_scope(User)).order_by(User.email)):
        out["users"].append({"email": u.email, "name": u.name, "role": u.role, "client": u.msp.name})
    for m in db.session.scalars(select(Mailbox).where(*in_scope(Mailbox)).order_by(Mailbox.address)):
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
        item["routes"] = [
            {"name": r.name, "client": r.client.name, **{k: getattr(r, k) for k in ROUTE_KEYS}} for r in m.routes
        ]
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == m.id))
        if own is not None:
            item["outgoing"] = outbound_svc.smtp_server_as_config(own, keys, with_secrets)
        out["mailboxes"].append(item)
    apps = [(c.name, item) for c in all_clients if c.is_msp
            if (item := microsoft_app.as_config(c.id, keys, with_secrets)) is not None]
    several = msp_id is None and client_svc.msp_count() > 1
    if apps:  # one MSP's file holds its app; the whole installation's names each app's MSP
        out["microsoft_app"] = [{"msp": name, **item} for name, item in apps] if several else apps[0][1]
    gateway = outbound_svc.default_gateway() if include_gateway else None
    if gateway is not None:
        out["smtp"] = outbound_svc.smtp_server_as_config(gateway, keys, with_secrets)
    return out


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

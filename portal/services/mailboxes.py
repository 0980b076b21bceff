"""Mailboxes and their routes: validation, secrets, activation. Flush, never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.models import Client, Mailbox, Route, User
from portal.models.mailboxes import AFTER_ACTIONS, DEFAULT_PORTS, DIRECTIONS, MAILBOX_STATUSES, PLUS_MODES
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address, normalise_domain
from portal.services.clients import get_client_by_name
from portal.transport.base import PROTOCOLS, SECURITIES

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
HOST_PATTERN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
SECRET_FIELDS = ("password",)


def get_mailbox(msp_id: int, mailbox_id: int) -> Mailbox | None:
    return db.session.scalar(select(Mailbox).where(Mailbox.id == mailbox_id, Mailbox.msp_id == msp_id))


def get_mailbox_by_address(address: str, msp_id: int | None = None) -> Mailbox | None:
    """The mailbox with this address (in this MSP when given). Drafts may share an address:
    when several do, ValidationError asks for one to be removed rather than picking one."""
    query = select(Mailbox).where(Mailbox.address == address.strip().lower())
    if msp_id is not None:
        query = query.where(Mailbox.msp_id == msp_id)
    found = db.session.scalars(query.limit(2)).all()
    if len(found) > 1:
        raise ValidationError({"address": [f"Several mailboxes use the address {address.strip().lower()}; "
                                           "delete the ones you do not need first."]})
    return found[0] if found else None


# One answer wherever the other mailbox is, so that an MSP learns nothing about another's mailboxes.
ADDRESS_CLAIMED = ("Another active mailbox already fetches this address, and only one may. "
                   "If that mailbox is one of yours, disable it first.")


def claimed_elsewhere(mailbox: Mailbox) -> bool:
    """Whether another mailbox claims this one's address: it is active and has reached its server
    (its last connection test succeeded, or it fetches without failing). Drafts claim nothing."""
    reached = Mailbox.last_test_ok.is_(True) | (Mailbox.last_success_at.is_not(None) & (Mailbox.failure_count == 0))
    return db.session.scalar(select(Mailbox.id).where(
        Mailbox.address == mailbox.address, Mailbox.id != mailbox.id, Mailbox.status == "active", reached
    ).limit(1)) is not None


@dataclass
class RouteInput:
    name: str
    client: Client
    recipients: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    subject_keywords: list[str] = field(default_factory=list)
    attachment_types: list[str] = field(default_factory=list)
    high_importance_only: bool = False
    fallback: bool = False
    enabled: bool = True
    acknowledge: bool = True
    acknowledge_cc: bool = False
    default_status: str | None = None
    default_priority: str | None = None
    default_type: str | None = None


def _address(value: str, label: str, errors: dict) -> str | None:
    try:
        return normalise_address(value)
    except AllowEntryError as exc:
        errors.setdefault(label, []).append(str(exc))
        return None


def _sender_pattern(value: str, errors: dict, where: str) -> str | None:
    text = value.strip().lower()
    if text == "*":
        return text
    try:
        if text.startswith("*@"):
            return "*@" + normalise_domain(text[2:])
        if "@" in text.lstrip("@"):
            return normalise_address(text)
        return normalise_domain(text)
    except AllowEntryError as exc:
        errors.setdefault("routes", []).append(f"{where}: sender {exc}")
        return None


def clean_routes(routes: list[RouteInput], msp_id: int) -> list[RouteInput]:
    """Validated and in the one order the pipeline uses: exact, then wildcard, then fallback.
    The ValidationError also carries `route_errors`: (index in `routes` or None, field, message),
    so that a form can put each message next to its field."""
    errors: dict[str, list[str]] = {}
    located: list[tuple[int | None, str, str]] = []

    def fail(index: int | None, name: str, message: str) -> None:
        errors.setdefault("routes", []).append(message)
        located.append((index, name, message))

    def collect(index: int, name: str, call):
        # The address helpers report under "routes"; note which route and field they were about.
        seen = len(errors.get("routes", []))
        result = call()
        located.extend((index, name, m) for m in errors.get("routes", [])[seen:])
        return result

    fallbacks = [r for r in routes if r.fallback]
    if routes and len(fallbacks) != 1:
        fail(None, "fallback", "A mailbox with routes needs exactly one fallback route, for mail no other route takes.")
    for i, r in enumerate(routes, 1):
        where = f"route {i} ({r.name or 'unnamed'})"
        if not r.name.strip():
            fail(i - 1, "name", f"route {i}: give it a name.")
        if r.client.msp_id != msp_id:
            fail(i - 1, "client", f"{where}: its client is not in this MSP's tree.")
        if r.fallback:
            continue
        if not r.recipients:
            fail(i - 1, "recipients", f"{where}: name the recipients it takes, or * with a sender list.")
        wildcard = "*" in r.recipients
        if wildcard and len(r.recipients) > 1:
            fail(i - 1, "recipients", f"{where}: * stands alone in the recipient list.")
        if wildcard and not r.senders:
            fail(i - 1, "senders", f"{where}: a wildcard route needs a sender list, or it would take all mail.")
        if wildcard and "*" in [s.strip() for s in r.senders]:
            fail(i - 1, "senders", f"{where}: a wildcard route cannot have a wildcard sender.")
        r.recipients = collect(i - 1, "recipients", lambda r=r: [
            x for x in ("*" if v.strip() == "*" else _address(v, "routes", errors) for v in r.recipients) if x])
        r.senders = collect(i - 1, "senders", lambda r=r, where=where: [
            x for x in (_sender_pattern(v, errors, where) for v in r.senders) if x])
        for value, allowed, label in ((r.default_status, TICKET_STATUSES[:3], "status"),
                                      (r.default_priority, PRIORITIES, "priority")):
            if value is not None and value not in allowed:
                fail(i - 1, f"default_{label}", f"{where}: {label} is one of {', '.join(allowed)}.")
    if errors:
        exc = ValidationError(errors)
        exc.route_errors = located
        raise exc
    rank = lambda r: 2 if r.fallback else (1 if "*" in r.recipients else 0)  # noqa: E731
    return sorted(routes, key=rank)


def _clean_settings(values: dict[str, Any], mailbox: Mailbox | None) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    out = dict(values)
    if "address" in values:
        out["address"] = _address(values["address"], "address", errors)
    for key, allowed in (("protocol", PROTOCOLS), ("security", SECURITIES), ("status", MAILBOX_STATUSES),
                         ("plus_addressing", PLUS_MODES), ("direction", DIRECTIONS),
                         ("default_priority", PRIORITIES), ("default_status", TICKET_STATUSES[:3])):
        if key in values and values[key] not in allowed:
            errors.setdefault(key, []).append(f"{values[key]!r} is not one of {', '.join(allowed)}.")
    protocol = values.get("protocol", mailbox.protocol if mailbox else "imap")
    security = values.get("security", mailbox.security if mailbox else "ssl")
    if "host" in values and values["host"] and not HOST_PATTERN.match(values["host"].strip()):
        errors.setdefault("host", []).append(f"{values['host']!r} is not a host name or IP address.")
    if "port" in values:
        port = values["port"]
        if port in (None, ""):
            out["port"] = DEFAULT_PORTS.get((protocol, security), 993)
        elif not isinstance(port, int) or not 1 <= port <= 65535:
            errors.setdefault("port", []).append("The port is a number from 1 to 65535.")
    if "after_action" in values and values["after_action"] not in AFTER_ACTIONS.get(protocol, ()):
        errors.setdefault("after_action", []).append(
            f"After processing, {protocol.upper()} can: {', '.join(AFTER_ACTIONS.get(protocol, ()))}.")
    if values.get("after_action") == "move" and not (values.get("processed_folder") or (mailbox and mailbox.processed_folder)):
        errors.setdefault("processed_folder", []).append("Name the folder processed mail is moved to.")
    for key in ("aliases", "alert_recipients"):
        if key in values:
            out[key] = [x for x in (_address(v, key, errors) for v in values[key] or []) if x]
    if "response_address" in values and values["response_address"]:
        out["response_address"] = _address(values["response_address"], "response_address", errors)
    if "ignore_senders" in values:
        out["ignore_senders"] = [x for x in (_sender_pattern(v, errors, "ignore list") for v in values["ignore_senders"] or []) if x]
        if "routes" in errors:
            errors["ignore_senders"] = errors.pop("routes")
    for key, low, high in (("poll_interval", 10, 86400), ("timeout", 5, 600), ("max_tries", 1, 100), ("cool_off", 0, 86400)):
        if key in values and not (isinstance(values[key], int) and low <= values[key] <= high):
            errors.setdefault(key, []).append(f"{key.replace('_', ' ')} is a whole number from {low} to {high}.")
    if "skip_windows" in values:
        for w in values["skip_windows"] or []:
            if not _WINDOW.match(str(w).replace(" ", "")):
                errors.setdefault("skip_windows", []).append(f"{w!r} is not a window like 02:00-04:00.")
        out["skip_windows"] = [str(w).replace(" ", "") for w in values["skip_windows"] or []]
    if "sync_start_date" in values and values["sync_start_date"] not in (None, ""):
        value = values["sync_start_date"]
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                errors.setdefault("sync_start_date", []).append(f"{value!r} is not a date like 2026-01-31.")
        out["sync_start_date"] = value
    if "folders" in values:
        folders = [f.strip() for f in values["folders"] or [] if f and f.strip()]
        if not folders:
            errors.setdefault("folders", []).append("Read at least one folder (usually INBOX).")
        out["folders"] = folders
    if errors:
        raise ValidationError(errors)
    return out


def _snapshot(mailbox: Mailbox) -> dict:
    snap = {c.key: getattr(mailbox, c.key) for c in Mailbox.__table__.columns
            if c.key not in ("id", "password_encrypted", "created_at", "msp_id") and not c.key.startswith(
                ("next_poll", "last_", "failure", "failing", "streak"))}
    snap["password"] = "(set)" if mailbox.password_encrypted else None
    snap["routes"] = [r.name for r in mailbox.routes]
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in snap.items()}


def save_mailbox(msp: Client, client: Client, values: dict[str, Any], *, keys: str, actor: User | None,
                 routes: list[RouteInput] | None = None, mailbox: Mailbox | None = None) -> tuple[Mailbox, dict]:
    """Create (mailbox None) or update a mailbox. `values` holds settings by column name plus
    `password` (plain; encrypted here). Returns the mailbox and the audited changes."""
    if client.msp_id != msp.id:
        raise ValidationError({"client": ["That client is not in this MSP's tree."]})
    password = values.pop("password", None)
    clean = _clean_settings(values, mailbox)
    if mailbox is not None and mailbox.password_encrypted is not None:
        if password and password == password_of(mailbox, keys):
            password = None  # typed again: no change, and the stored one may go on being used
        elif not password and server_changed(mailbox, clean):
            raise ValidationError({"password": [RETYPE_PASSWORD]})
    ordered = clean_routes(routes, msp.id) if routes is not None else None
    created = mailbox is None
    if created:
        if not clean.get("address"):
            raise ValidationError({"address": ["Give the mailbox its address."]})
        mailbox = Mailbox(msp_id=msp.id, client_id=client.id, address=clean["address"])
        db.session.add(mailbox)
        before: dict = {}
    else:
        before = _snapshot(mailbox)
    mailbox.client_id = client.id
    for key, value in clean.items():
        setattr(mailbox, key, value)
    # A new password reads "(set)" before and after: say so, or the history would not show it.
    password_changed = bool(password) and not created and mailbox.password_encrypted is not None
    if password:
        mailbox.password_encrypted = crypto.encrypt(keys, password)
    if ordered is not None:
        mailbox.routes.clear()
        db.session.flush()
        for position, r in enumerate(ordered):
            mailbox.routes.append(Route(
                position=position, name=r.name.strip(), enabled=r.enabled, fallback=r.fallback,
                recipients=r.recipients, senders=r.senders, subject_keywords=r.subject_keywords,
                attachment_types=r.attachment_types, high_importance_only=r.high_importance_only,
                client_id=r.client.id, acknowledge=r.acknowledge, acknowledge_cc=r.acknowledge_cc,
                default_status=r.default_status, default_priority=r.default_priority, default_type=r.default_type))
    if mailbox.status == "active":
        problems = activation_problems(mailbox)
        # Only a mailbox that reached its server may be refused: else the answer would tell anyone
        # who types an address whether some MSP fetches it.
        if (before.get("status") != "active" or before.get("address") != mailbox.address) \
                and (mailbox.last_test_ok or mailbox.last_success_at is not None) and claimed_elsewhere(mailbox):
            problems.append(ADDRESS_CLAIMED)
        if problems:
            raise ValidationError({"status": problems})
        if before.get("status") != "active":
            from portal.models.base import utcnow  # noqa: PLC0415

            mailbox.next_poll_at = utcnow()  # due at once; a mailbox never polled since is stalled
    db.session.flush()
    changes = audit.diff(before, _snapshot(mailbox))
    if password_changed:
        changes.setdefault("password", ["(set)", "(changed)"])
    if changes:
        audit.record(actor, msp.id, "mailbox", mailbox.id, "created" if created else "updated", changes)
    return mailbox, changes


def activation_problems(mailbox: Mailbox) -> list[str]:
    problems = []
    if not mailbox.host:
        problems.append("Set the server's host name before activating.")
    if not mailbox.username:
        problems.append("Set the user name before activating.")
    if mailbox.password_encrypted is None:
        problems.append("Set the password before activating.")
    if mailbox.routes and not any(r.fallback for r in mailbox.routes):
        problems.append("A mailbox with routes cannot be activated without a fallback route.")
    elif fallback_switched_off(mailbox.routes):
        problems.append("The fallback route is switched off: switch it on before activating.")
    return problems


RETYPE_PASSWORD = ("The server or user name differs from the saved one: type the password again. "
                   "A saved password is only ever sent to the server it was saved for.")
# What a stored secret is bound to: another value is another server that has not earned it.
SERVER_IDENTITY = ("protocol", "host", "port", "username")


def server_changed(saved, values: dict[str, Any], keys=SERVER_IDENTITY) -> bool:
    """Whether `values` name another server or login than `saved` (a mailbox or SMTP server)."""
    def norm(key, value):
        text = "" if value is None else str(value).strip()
        return text.lower() if key == "host" else text
    return any(key in values and norm(key, values[key]) != norm(key, getattr(saved, key)) for key in keys)


def server_reach(actor: User | None = None):
    """The address rule (transport.reach) for a connection to a server an MSP typed in. It applies
    when the installation hosts several MSPs, to everyone but the operators; jobs have no actor."""
    from flask import current_app  # noqa: PLC0415

    from portal.services.clients import msp_count  # noqa: PLC0415
    from portal.transport.reach import Reach  # noqa: PLC0415

    cfg = current_app.config
    operator = actor is not None and actor.email.lower() in cfg["TIDEMARK_OPERATORS"]
    return Reach(restricted=not operator and msp_count() > 1, allowed=tuple(cfg["TIDEMARK_ALLOWED_SERVER_NETWORKS"]),
                 denied=tuple(cfg["TIDEMARK_DENIED_SERVER_NETWORKS"]))


def password_of(mailbox: Mailbox, keys: str) -> str:
    return crypto.decrypt(keys, mailbox.password_encrypted) if mailbox.password_encrypted else ""


def server_settings(mailbox: Mailbox, keys: str, ca_file: str | None = None, *, actor: User | None = None):
    """How to reach the mailbox's server; `actor` None (a job) is held to the address rule."""
    from portal.transport.base import ServerSettings  # noqa: PLC0415 - transport stays optional for the portal

    return ServerSettings(
        protocol=mailbox.protocol, host=mailbox.host, port=mailbox.port, security=mailbox.security,
        username=mailbox.username, password=password_of(mailbox, keys), auth_identity=mailbox.shared_mailbox,
        timeout=float(mailbox.timeout), verify_tls=mailbox.verify_tls, ca_file=ca_file, reach=server_reach(actor),
    )


def _record_secret_test(actor: User | None, mailbox: Mailbox, what: str, server: str, result: str) -> None:
    """Every test that sends a stored secret somewhere is in the mailbox's history."""
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"{what} (saved password)",
                 {"server": [None, server], "result": [None, result]})


def rotate_secrets(keys: str) -> int:
    """Re-encrypt every stored secret with the first key; returns how many were rewritten."""
    count = 0
    from portal.models import SmtpServer  # noqa: PLC0415

    for mailbox in db.session.scalars(select(Mailbox).where(Mailbox.password_encrypted.is_not(None))):
        mailbox.password_encrypted = crypto.rotate(keys, mailbox.password_encrypted)
        count += 1
    for server in db.session.scalars(select(SmtpServer).where(SmtpServer.password_encrypted.is_not(None))):
        server.password_encrypted = crypto.rotate(keys, server.password_encrypted)
        count += 1
    db.session.flush()
    return count


def client_named(msp: Client, name: str) -> Client:
    client = get_client_by_name(msp.id, name)
    if client is None:
        raise ValidationError({"client": [f"There is no client called {name!r} in {msp.name}."]})
    return client


def check_connection(mailbox: Mailbox, keys: str, *, ca_file: str | None = None, probe=None,
                     actor: User | None = None):
    """"Test connection": try the server now and keep the answer and its time on the mailbox."""
    from portal.models.base import utcnow  # noqa: PLC0415
    from portal.transport.probe import test_connection  # noqa: PLC0415

    settings = server_settings(mailbox, keys, ca_file, actor=actor)
    result = (probe or test_connection)(settings)
    mailbox.last_test_at = utcnow()
    mailbox.last_test_ok = result.ok
    mailbox.last_test_message = result.message
    if mailbox.password_encrypted is not None:
        _record_secret_test(actor, mailbox, "connection test", settings.address, result.message)
    db.session.flush()
    return result


@dataclass
class MailboxHealth:
    mailbox: Mailbox
    state: str  # "healthy", "stalled", "failing", "not fetched yet", "draft", "disabled"


def mailbox_health(msp_id: int) -> list[MailboxHealth]:
    """Every mailbox of the MSP with what a person checks first (its figures: services.dashboard)."""
    from portal.inbound.health import stalled_ids  # noqa: PLC0415
    from portal.models.base import utcnow  # noqa: PLC0415

    out = []
    mailboxes = list(db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)))
    stalled = stalled_ids(mailboxes, utcnow())
    for m in mailboxes:
        if m.status != "active":
            state = m.status
        elif m.id in stalled:
            state = "stalled"
        elif m.failure_count:
            state = "failing"
        elif m.last_success_at is None:
            state = "not fetched yet"
        else:
            state = "healthy"
        out.append(MailboxHealth(m, state))
    return out


# --- editing from the browser: one route at a time, status, removal, typed-settings test -----------

ROUTE_FIELDS = ("recipients", "senders", "subject_keywords", "attachment_types", "high_importance_only",
                "fallback", "enabled", "acknowledge", "acknowledge_cc", "default_status", "default_priority",
                "default_type")
_ROUTE_PREFIX = re.compile(r"^route \d+(?: \(.*?\))?: ")


def get_route(mailbox: Mailbox, route_id: int) -> Route | None:
    return next((r for r in mailbox.routes if r.id == route_id), None)


def route_input_of(route: Route) -> RouteInput:
    return RouteInput(name=route.name, client=route.client,
                      **{k: (list(v) if isinstance(v := getattr(route, k), list) else v) for k in ROUTE_FIELDS})


def _route_snapshot(route: Route | RouteInput) -> dict:
    snap = {"name": route.name, "client": route.client.name, **{k: getattr(route, k) for k in ROUTE_FIELDS}}
    # Unset conditions say nothing in the history of an added or removed route.
    return {k: v for k, v in snap.items() if v not in (None, [], "")}


def _route_order(mailbox: Mailbox) -> list[str]:
    return [r.name for r in sorted(mailbox.routes, key=lambda r: r.position)]


def fallback_switched_off(routes) -> bool:
    """Routes (rows or inputs) whose fallback is switched off: mail no other route takes would be
    left unprocessed, so an active mailbox may not have them."""
    return bool(routes) and not any(r.fallback and r.enabled for r in routes)


def _write_routes(mailbox: Mailbox, planned: list[tuple[Route | None, RouteInput]],
                  focus: int | None = None) -> dict[int, Route]:
    """Check the whole list with clean_routes, then update the rows in place (their ids stay).
    `focus` is the index in `planned` whose messages belong next to the fields of its form."""
    try:
        ordered = clean_routes([data for _, data in planned], mailbox.msp_id)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for index, name, message in getattr(exc, "route_errors", []):
            if index is not None and index == focus:
                text = _ROUTE_PREFIX.sub("", message)
                errors.setdefault(name, []).append(text[:1].upper() + text[1:])
            elif name == "fallback" and index is None and focus is not None:
                errors.setdefault("fallback", []).append(message)
            else:
                errors.setdefault("", []).append(message)
        raise ValidationError(errors) from None
    if mailbox.status == "active" and fallback_switched_off(ordered):
        fallback_is_focus = focus is not None and planned[focus][1].fallback
        raise ValidationError({"enabled" if fallback_is_focus else "": [
            "The mailbox is active, so its fallback route must stay switched on: mail no other route "
            "takes would be left unprocessed. Disable the mailbox first to switch it off."]})
    row_of = {id(data): row for row, data in planned}
    kept: dict[int, Route] = {}
    for position, data in enumerate(ordered):
        row = row_of[id(data)]
        if row is None:
            row = Route(name=data.name.strip(), client_id=data.client.id)
            mailbox.routes.append(row)
        row.name, row.client_id, row.client, row.position = data.name.strip(), data.client.id, data.client, position
        for key in ROUTE_FIELDS:
            setattr(row, key, getattr(data, key))
        kept[id(data)] = row
    for row in list(mailbox.routes):
        if row not in kept.values():
            mailbox.routes.remove(row)
    mailbox.routes.sort(key=lambda r: r.position)
    db.session.flush()
    return kept


def save_route(mailbox: Mailbox, data: RouteInput, *, actor: User | None, route: Route | None = None) -> Route:
    """Add (route None) or change one route. Marking it the fallback takes that flag from the
    route that had it, since a mailbox has exactly one."""
    planned: list[tuple[Route | None, RouteInput]] = []
    for row in mailbox.routes:
        current = data if row is route else route_input_of(row)
        if row is not route and data.fallback and current.fallback:
            current.fallback = False
        planned.append((row, current))
    if route is None:
        planned.append((None, data))
    focus = next(i for i, (_, d) in enumerate(planned) if d is data)
    before = _route_snapshot(route) if route is not None else {}
    saved = _write_routes(mailbox, planned, focus)[id(data)]
    changes = audit.diff(before, _route_snapshot(saved))
    if changes:
        action = f"route {saved.name} {'changed' if route is not None else 'added'}"
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, action, changes)
    return saved


def delete_route(mailbox: Mailbox, route: Route, *, actor: User | None) -> None:
    planned = [(row, route_input_of(row)) for row in mailbox.routes if row is not route]
    before = _route_snapshot(route)
    _write_routes(mailbox, planned)
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"route {route.name} removed",
                 audit.diff(before, {}))


def reorder_routes(mailbox: Mailbox, route_ids: list[int], *, actor: User | None) -> bool:
    """Put the routes in the given order. The pipeline always tries exact routes, then wildcard
    routes, then the fallback, so an order across those groups is corrected; returns False then."""
    rows = {r.id: r for r in mailbox.routes}
    if sorted(route_ids) != sorted(rows):
        raise ValidationError({"": ["The list of routes changed meanwhile; reload the page and try again."]})
    before = _route_order(mailbox)
    _write_routes(mailbox, [(rows[i], route_input_of(rows[i])) for i in route_ids])
    after = _route_order(mailbox)
    if after != before:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "routes reordered", {"order": [before, after]})
    return [r.id for r in mailbox.routes] == list(route_ids)


def route_group(route: Route) -> int:
    """0 exact, 1 wildcard, 2 fallback: routes move only within their group."""
    return 2 if route.fallback else (1 if route.wildcard else 0)


def move_route(mailbox: Mailbox, route: Route, step: int, *, actor: User | None) -> bool:
    """One place up (step -1) or down (+1) within its group; False when it is already at the edge."""
    ids = [r.id for r in mailbox.routes]
    i = ids.index(route.id)
    j = i + step
    if not 0 <= j < len(ids) or route_group(mailbox.routes[j]) != route_group(route):
        return False
    ids[i], ids[j] = ids[j], ids[i]
    return reorder_routes(mailbox, ids, actor=actor)


def set_status(mailbox: Mailbox, status: str, *, keys: str, actor: User | None) -> dict:
    """Activate, disable or return to draft; activation is refused with its reasons."""
    msp = db.session.get(Client, mailbox.msp_id)
    _mailbox, changes = save_mailbox(msp, mailbox.client, {"status": status}, keys=keys, actor=actor, mailbox=mailbox)
    return changes


def delete_mailbox(mailbox: Mailbox, *, actor: User | None) -> int:
    """Remove a mailbox with its routes, folder states, alerts and outgoing server. Its tickets
    and stored mail stay (they no longer name a mailbox). Returns how many tickets it had."""
    from sqlalchemy import delete, func, update  # noqa: PLC0415

    from portal.models import MailboxAlert, Message, RawMessage, SmtpServer, Ticket  # noqa: PLC0415

    tickets = db.session.scalar(select(func.count()).select_from(Ticket).where(Ticket.mailbox_id == mailbox.id))
    # Said here as well as in the schema: SQLite does not enforce ON DELETE without its pragma.
    for model in (Ticket, Message, RawMessage):
        db.session.execute(update(model).where(model.mailbox_id == mailbox.id).values(mailbox_id=None))
    for model in (SmtpServer, MailboxAlert):
        db.session.execute(delete(model).where(model.mailbox_id == mailbox.id))
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "deleted", audit.diff(_snapshot(mailbox), {}))
    db.session.delete(mailbox)
    db.session.flush()
    return tickets


def probe_settings(values: dict[str, Any], keys: str, *, mailbox: Mailbox | None = None,
                   ca_file: str | None = None, probe=None, actor: User | None = None):
    """"Test connection" with the settings as typed, before they are saved. An empty password
    means the stored one, for the server it was stored for only; such a test is in the mailbox's
    history, nothing else is recorded. Raises ValidationError for unusable settings."""
    from portal.transport.base import ServerSettings  # noqa: PLC0415
    from portal.transport.probe import test_connection  # noqa: PLC0415

    wanted = {k: values.get(k) for k in ("protocol", "security", "host", "port", "timeout")}
    if wanted["timeout"] in (None, ""):
        wanted["timeout"] = mailbox.timeout if mailbox else 30
    clean = _clean_settings(wanted, None)
    if not (clean.get("host") or "").strip():
        raise ValidationError({"host": ["Give the server's host name to test the connection."]})
    username = (values.get("username") or "").strip()
    stored = not values.get("password") and mailbox is not None and mailbox.password_encrypted is not None
    if stored and server_changed(mailbox, {**clean, "username": username}):
        raise ValidationError({"password": [RETYPE_PASSWORD]})
    password = password_of(mailbox, keys) if stored else values.get("password") or ""
    settings = ServerSettings(
        protocol=clean["protocol"], host=clean["host"].strip(), port=clean["port"], security=clean["security"],
        username=username, password=password,
        auth_identity=(values.get("shared_mailbox") or "").strip() or None, timeout=float(clean["timeout"]),
        verify_tls=bool(values.get("verify_tls", True)), ca_file=ca_file, reach=server_reach(actor))
    result = (probe or test_connection)(settings)
    if stored:
        _record_secret_test(actor, mailbox, "form test", settings.address, result.message)
    return result


def _server_snapshot(server) -> dict:
    if server is None:
        return {}
    return {"host": server.host, "port": server.port, "security": server.security, "username": server.username,
            "from": server.from_address, "timeout": server.timeout, "verify_tls": server.verify_tls,
            "password": "(set)" if server.password_encrypted else None}


def save_outgoing_server(mailbox: Mailbox, values: dict[str, Any], *, keys: str, actor: User | None) -> dict:
    """The mailbox's own SMTP server, through outbound.save_smtp_server, audited on the mailbox."""
    from portal.services import outbound  # noqa: PLC0415

    own = outbound.own_server(mailbox)
    before = _server_snapshot(own)
    old_secret = own.password_encrypted if own is not None else None
    server, _changed = outbound.save_smtp_server(values, keys=keys, mailbox=mailbox)
    changes = {f"outgoing {k}": v for k, v in audit.diff(before, _server_snapshot(server)).items()}
    if old_secret is not None and server.password_encrypted != old_secret:
        changes.setdefault("outgoing password", ["(set)", "(changed)"])
    if changes:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id,
                     "outgoing server " + ("set" if own is None else "changed"), changes)
    return changes


def send_outgoing_test(mailbox: Mailbox, recipient: str, env, *, actor: User | None, send=None) -> str:
    """"Send test email" (outbound.send_mailbox_test), in the history when it used a saved password."""
    from portal.services import outbound  # noqa: PLC0415
    from portal.transport.smtp import send as smtp_send  # noqa: PLC0415

    used = []

    def sending(settings, email):
        used.append(settings)
        return (send or smtp_send)(settings, email)

    result = outbound.send_mailbox_test(mailbox, recipient, env, actor, send=sending)
    if used and used[0].password:
        _record_secret_test(actor, mailbox, "test email", used[0].address, result)
    return result


def remove_outgoing_server(mailbox: Mailbox, *, actor: User | None) -> bool:
    """Back to the default gateway."""
    from portal.services import outbound  # noqa: PLC0415

    own = outbound.own_server(mailbox)
    if own is None:
        return False
    changes = {f"outgoing {k}": v for k, v in audit.diff(_server_snapshot(own), {}).items()}
    db.session.delete(own)
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "outgoing server removed", changes)
    db.session.flush()
    return True

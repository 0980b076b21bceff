"""Mailboxes: validation, secrets, activation, "test connection", removal. Their routes are in
services.routes, their outgoing server in portal.outbound.servers. Flush, never commit."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select, update

from portal import crypto
from portal.extensions import db
from portal.jobs import enqueue
from portal.models import AuditEntry, Client, GraphSubscription, Mailbox, MailboxAlert, Message, RawMessage, Route, SmtpServer, Ticket, User
from portal.models.base import utcnow
from portal.models.mailboxes import (
    AFTER_ACTIONS,
    AUTOMATIC_MAIL_MODES,
    DEFAULT_PORTS,
    DIRECTIONS,
    EMBED_IMAGES,
    GRAPH_API_URL,
    MAX_MESSAGE_SIZE_LIMIT,
    MAILBOX_PROTOCOLS,
    MAILBOX_STATUSES,
    PLUS_MODES,
)
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.outbound.variants import check_variant_name
from portal.services import ValidationError, audit
from portal.services import mailbox_oauth as oauth_svc
from portal.services import microsoft_app
from portal.services.clients import get_client_by_name, msp_count
from portal.services.custom_fields import type_problem
from portal.services.routes import (
    RouteInput,
    checked_address,
    checked_sender_pattern,
    clean_routes,
    fallback_switched_off,
)
from portal.services.mailbox_tokens import access_token
from portal.transport.base import SECURITIES, ServerSettings, TransportError
from portal.transport.graph import GraphSettings
from portal.transport.lmtp import probe_listener
from portal.transport.probe import ProbeResult
from portal.transport.probe import test_connection
from portal.transport.reach import Reach

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


def _clean_settings(values: dict[str, Any], mailbox: Mailbox | None, oauth: Any = oauth_svc.MISSING,
                    client: Client | None = None) -> dict[str, Any]:
    """The settings as they are stored; every wrong one is named in one ValidationError. `oauth`:
    the OAuth2 settings as typed, checked into out["oauth"] (services.mailbox_oauth)."""
    errors: dict[str, list[str]] = {}
    out = dict(values)
    if "address" in values:
        out["address"] = checked_address(values["address"], "address", errors)
    for key, allowed in (("protocol", MAILBOX_PROTOCOLS), ("security", SECURITIES), ("status", MAILBOX_STATUSES),
                         ("plus_addressing", PLUS_MODES), ("direction", DIRECTIONS),
                         ("automatic_mail", AUTOMATIC_MAIL_MODES), ("embed_images", EMBED_IMAGES),
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
    if protocol == "lmtp" and ("protocol" in values or "after_action" in values):
        out["after_action"] = "keep"  # pushed mail: no server to tell anything
    elif "after_action" in values and values["after_action"] not in AFTER_ACTIONS.get(protocol, ()):
        errors.setdefault("after_action", []).append(
            f"After processing, {protocol.upper()} can: {', '.join(AFTER_ACTIONS.get(protocol, ()))}.")
    if out.get("after_action") == "move" and not (values.get("processed_folder") or (mailbox and mailbox.processed_folder)):
        errors.setdefault("processed_folder", []).append("Name the folder processed mail is moved to.")
    for key in ("aliases", "alert_recipients"):
        if key in values:
            out[key] = [x for x in (checked_address(v, key, errors) for v in values[key] or []) if x]
    for key in ("response_address", "reply_to"):
        if key in values and values[key]:
            out[key] = checked_address(values[key], key, errors)
    if "ignore_senders" in values:
        out["ignore_senders"] = [x for x in (checked_sender_pattern(v, errors, "ignore list") for v in values["ignore_senders"] or []) if x]
        if "routes" in errors:
            errors["ignore_senders"] = errors.pop("routes")
    for key, low, high in (("poll_interval", 10, 86400), ("timeout", 5, 600), ("max_tries", 1, 100), ("cool_off", 0, 86400)):
        if key in values and not (isinstance(values[key], int) and low <= values[key] <= high):
            errors.setdefault(key, []).append(f"{key.replace('_', ' ')} is a whole number from {low} to {high}.")
    if values.get("max_message_size") in ("", 0):
        out["max_message_size"] = None
    elif values.get("max_message_size") is not None:
        size = values["max_message_size"]
        if not (isinstance(size, int) and not isinstance(size, bool) and 1024 <= size <= MAX_MESSAGE_SIZE_LIMIT):
            errors.setdefault("max_message_size", []).append(
                f"The largest email is from 1 KB to {MAX_MESSAGE_SIZE_LIMIT // 2**20} MB, or empty for the "
                "installation's 40 MB.")
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
    if "acknowledgement_variant" in values:
        owner = client or (mailbox.client if mailbox else None)
        out["acknowledgement_variant"] = check_variant_name(values["acknowledgement_variant"], owner,
                                                            "acknowledgement_variant", errors) if owner else None
    oauth_svc.check_auth(values, out, mailbox, errors)
    out["oauth"] = oauth_svc.checked_oauth(oauth, mailbox, out, errors, client)
    if errors:
        raise ValidationError(errors)
    return out


def _snapshot(mailbox: Mailbox) -> dict:
    snap = {c.key: getattr(mailbox, c.key) for c in Mailbox.__table__.columns
            if c.key not in ("id", "password_encrypted", "created_at", "msp_id") and not c.key.startswith(
                ("next_poll", "last_", "failure", "failing", "streak"))}
    snap["password"] = "(set)" if mailbox.password_encrypted else None
    snap["routes"] = [r.name for r in mailbox.routes]
    snap.update(oauth_svc.snapshot(mailbox.oauth))
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in snap.items()}


def save_mailbox(msp: Client, client: Client, values: dict[str, Any], *, keys: str, actor: User | None,
                 routes: list[RouteInput] | None = None, mailbox: Mailbox | None = None,
                 require_test: bool = False) -> tuple[Mailbox, dict]:
    """Create (mailbox None) or update a mailbox. `values` holds settings by column name plus
    `password` (plain; encrypted here). Returns the mailbox and the audited changes. `require_test`
    (the portal's pages): active only after a successful test of the saved settings (test_problem);
    the configuration file and the command line are the operator's and are not held to it."""
    if client.msp_id != msp.id:
        raise ValidationError({"client": ["That client is not in this MSP's tree."]})
    password = values.pop("password", None)
    if problem := type_problem(msp.id, values.get("default_type")):
        raise ValidationError({"default_type": [problem]})
    clean = _clean_settings(values, mailbox, values.pop("oauth", oauth_svc.MISSING), client)
    oauth = clean.pop("oauth")
    password, forget_password = _new_password(mailbox, password, clean, keys)
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
    elif forget_password:
        mailbox.password_encrypted = None
    notes = oauth_svc.apply_oauth(mailbox, oauth, keys)
    if ordered is not None:
        mailbox.routes.clear()
        db.session.flush()
        for position, r in enumerate(ordered):
            mailbox.routes.append(Route(
                position=position, name=r.name.strip(), enabled=r.enabled, fallback=r.fallback,
                recipients=r.recipients, senders=r.senders, subject_keywords=r.subject_keywords,
                attachment_types=r.attachment_types, high_importance_only=r.high_importance_only,
                client_id=r.client.id, acknowledge=r.acknowledge, acknowledge_cc=r.acknowledge_cc,
                default_status=r.default_status, default_priority=r.default_priority, default_type=r.default_type,
                test_mode=r.test_mode, acknowledgement_variant=r.acknowledgement_variant,
                extraction_rules=r.extraction_rules, alert_rule=r.alert_rule))
    if mailbox.status == "active":
        problems = activation_problems(mailbox)
        if before.get("status") == "active" and before.get("oauth.grant") == _snapshot(mailbox).get("oauth.grant"):
            # A grant that lapsed while active is the refresher's alarm; it does not lock the settings.
            problems = [p for p in problems if p != oauth_svc.NOT_CONNECTED]
        # Only a mailbox that reached its server may be refused: else the answer would tell anyone
        # who types an address whether some MSP fetches it.
        if (before.get("status") != "active" or before.get("address") != mailbox.address) \
                and (mailbox.last_test_ok or mailbox.last_success_at is not None) and claimed_elsewhere(mailbox):
            problems.append(ADDRESS_CLAIMED)
        if require_test:
            changed_now = set(audit.diff(before, _snapshot(mailbox))) | ({"password"} if password else set())
            problem = NOT_TESTED if created else test_problem(mailbox, changed_now,
                                                              was_active=before.get("status") == "active")
            if problem:
                problems.append(problem)
        if problems:
            raise ValidationError({"status": problems})
        if before.get("status") != "active":
            mailbox.next_poll_at = utcnow()  # due at once; a mailbox never polled since is stalled
    db.session.flush()
    _keep_graph_subscriptions(mailbox)
    changes = audit.diff(before, _snapshot(mailbox))
    if password_changed:
        changes.setdefault("password", ["(set)", "(changed)"])
    changes.update(notes)
    if changes:
        audit.record(actor, msp.id, "mailbox", mailbox.id, "created" if created else "updated", changes)
    return mailbox, changes


def _keep_graph_subscriptions(mailbox: Mailbox) -> None:
    """Graph change notifications follow the mailbox: subscribed when it becomes active, deleted
    when it is disabled or speaks another protocol (workers.graph_push, after the commit)."""
    if mailbox.protocol == "graph" or mailbox.graph_subscriptions:
        enqueue("workers.graph_push.keep_mailbox_subscriptions", mailbox.id,
                options={"job_id": f"graph-subscriptions-{mailbox.id}", "unique": True, "result_ttl": 0,
                         "failure_ttl": 3600})


def _new_password(mailbox: Mailbox | None, password: str | None, clean: dict[str, Any],
                  keys: str) -> tuple[str | None, bool]:
    """(the password to store or None, whether to forget the stored one)."""
    if mailbox is None or mailbox.password_encrypted is None:
        return password, False
    if password and password == password_of(mailbox, keys):
        return None, False  # typed again: no change, and the stored one may go on being used
    if not password and server_changed(mailbox, clean):
        if clean.get("auth", mailbox.auth) == "oauth2":
            # Not used by OAuth2, and bound to the old server: it goes, and the history says so.
            return None, True
        raise ValidationError({"password": [RETYPE_PASSWORD]})
    return password, False


def activation_problems(mailbox: Mailbox) -> list[str]:
    problems = []
    if mailbox.fetches and mailbox.protocol != "lmtp":  # outgoing only: reads nothing; LMTP: pushed, no server
        if not mailbox.host and mailbox.protocol != "graph":
            problems.append("Set the server's host name before activating.")
        if not mailbox.username and mailbox.protocol != "graph":
            problems.append("Set the user name before activating.")
        if mailbox.password_encrypted is None and mailbox.auth != "oauth2":
            problems.append("Set the password before activating.")
    problems.extend(oauth_svc.activation_problems(mailbox))
    if mailbox.routes and not any(r.fallback for r in mailbox.routes):
        problems.append("A mailbox with routes cannot be activated without a fallback route.")
    elif fallback_switched_off(mailbox.routes):
        problems.append("The fallback route is switched off: switch it on before activating.")
    return problems


# What a mailbox's connection test tries (services.mailbox_checks): a change to any of these
# after the last test makes it stale; so does one to its own outgoing server when it sends.
CONNECTION_FIELDS = frozenset({"protocol", "host", "port", "security", "username", "password", "shared_mailbox",
                               "verify_tls", "auth", "api_url", "direction"})
NOT_TESTED = ("Test the connection first: save the mailbox as a draft, press Test on its page, and activate it "
              "when the test succeeds.")
TEST_FAILED = ("The last connection test failed: correct the settings and press Test on the mailbox's page "
               "until it succeeds.")
TEST_STALE = ("The connection settings changed after the last connection test: press Test on the mailbox's "
              "page to try the saved settings, then activate it.")
ACTIVE_CONNECTION_CHANGED = ("An active mailbox keeps the connection settings it was tested with: disable it, "
                             "save the new settings, press Test on its page, then activate it again.")


def test_problem(mailbox: Mailbox, changed_now: set[str], *, was_active: bool) -> str | None:
    """Why the mailbox may not be active for lack of a successful test of its saved settings: no
    test, a failed one, or one older than the last change of a connection setting (this save's
    `changed_now`, else the mailbox's history). None when the last test holds."""
    if _connection_keys(mailbox, changed_now):
        return ACTIVE_CONNECTION_CHANGED if was_active else TEST_STALE
    if was_active:
        return None  # its settings did not change: it stays active as it was tested
    if mailbox.last_test_at is None:
        return NOT_TESTED
    if not mailbox.last_test_ok:
        return TEST_FAILED
    later = db.session.scalars(select(AuditEntry.changes).where(
        AuditEntry.record_type == "mailbox", AuditEntry.record_id == mailbox.id, AuditEntry.at > mailbox.last_test_at))
    if any(_connection_keys(mailbox, set(changes or {})) for changes in later):
        return TEST_STALE
    return None


def _connection_keys(mailbox: Mailbox, keys: set[str]) -> set[str]:
    """The keys of a change that the mailbox's test tries (its outgoing server's when it sends)."""
    return {k for k in keys if k in CONNECTION_FIELDS
            or (k.startswith("outgoing ") and k != "outgoing from" and mailbox.direction != "incoming")}


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
    cfg = current_app.config
    operator = actor is not None and actor.email.lower() in cfg["TIDEMARK_OPERATORS"]
    return Reach(restricted=not operator and msp_count() > 1, allowed=tuple(cfg["TIDEMARK_ALLOWED_SERVER_NETWORKS"]),
                 denied=tuple(cfg["TIDEMARK_DENIED_SERVER_NETWORKS"]))


def password_of(mailbox: Mailbox, keys: str) -> str:
    return crypto.decrypt(keys, mailbox.password_encrypted) if mailbox.password_encrypted else ""


def server_settings(mailbox: Mailbox, keys: str, ca_file: str | None = None, *, actor: User | None = None):
    """How to reach the mailbox's server; `actor` None (a job) is held to the address rule. An
    oauth2 mailbox logs in with a fresh access token as its username, opening `shared_mailbox`
    when set (mailbox_tokens.access_token: may refresh the grant, raises TransportError)."""
    reach = server_reach(actor)
    if mailbox.protocol == "graph":
        return graph_settings(mailbox, keys, reach=reach)
    token = access_token(mailbox, keys, reach=reach) if mailbox.auth == "oauth2" else None
    return ServerSettings(
        protocol=mailbox.protocol, host=mailbox.host, port=mailbox.port, security=mailbox.security,
        username=mailbox.username, password="" if token else password_of(mailbox, keys),
        auth_identity=mailbox.shared_mailbox, timeout=float(mailbox.timeout), verify_tls=mailbox.verify_tls,
        ca_file=ca_file, reach=reach, token=token,
    )


def graph_settings(mailbox: Mailbox, keys: str, *, reach: Reach) -> GraphSettings:
    """How to reach a Graph mailbox: its API URL, its own address in the URL (a shared mailbox's
    address opens the shared mailbox with a delegate's or the app's token), a fresh token."""
    return GraphSettings(api_url=mailbox.api_url or GRAPH_API_URL, mailbox=mailbox.shared_mailbox or mailbox.address,
                         token=access_token(mailbox, keys, reach=reach), timeout=float(mailbox.timeout),
                         verify_tls=mailbox.verify_tls, reach=reach)


def record_secret_test(actor: User | None, mailbox: Mailbox, what: str, server: str, result: str,
                       secret: str = "saved password") -> None:
    """Every test that sends a stored secret (a password, a grant's token) somewhere is in the
    mailbox's history."""
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"{what} ({secret})",
                 {"server": [None, server], "result": [None, result]})


def rotate_secrets(keys: str) -> int:
    """Re-encrypt every stored secret with the first key; returns how many were rewritten."""
    count = 0
    for mailbox in db.session.scalars(select(Mailbox).where(Mailbox.password_encrypted.is_not(None))):
        mailbox.password_encrypted = crypto.rotate(keys, mailbox.password_encrypted)
        count += 1
    for server in db.session.scalars(select(SmtpServer).where(SmtpServer.password_encrypted.is_not(None))):
        server.password_encrypted = crypto.rotate(keys, server.password_encrypted)
        count += 1
    count += oauth_svc.rotate_secrets(keys)
    for row in db.session.scalars(select(GraphSubscription).where(GraphSubscription.client_state_encrypted.is_not(None))):
        row.client_state_encrypted = crypto.rotate(keys, row.client_state_encrypted)
        count += 1
    count += microsoft_app.rotate_secrets(keys)
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
    if mailbox.protocol == "lmtp":  # no server of its own: is the listener its mail is pushed to there?
        settings, result = None, probe_listener(current_app.config["TIDEMARK_LMTP_LISTEN"])
    else:
        settings, result = _check_server(mailbox, keys, ca_file, probe, actor)
    mailbox.last_test_at = utcnow()
    mailbox.last_test_ok = result.ok
    mailbox.last_test_message = result.message
    if settings is not None and (settings.token or mailbox.password_encrypted is not None):
        record_secret_test(actor, mailbox, "connection test", settings.address, result.message,
                           secret="OAuth2 grant" if settings.token else "saved password")
    db.session.flush()
    return result


def _check_server(mailbox: Mailbox, keys: str, ca_file: str | None, probe, actor: User | None):
    try:
        settings = server_settings(mailbox, keys, ca_file, actor=actor)
    except TransportError as exc:  # no access token: the grant's words, and nothing sent to the server
        return None, ProbeResult(ok=False, message=exc.message, kind=exc.kind)
    return settings, (probe or test_connection)(settings)


def set_status(mailbox: Mailbox, status: str, *, keys: str, actor: User | None) -> dict:
    """Activate, disable or return to draft; activation is refused with its reasons."""
    msp = db.session.get(Client, mailbox.msp_id)
    _mailbox, changes = save_mailbox(msp, mailbox.client, {"status": status}, keys=keys, actor=actor, mailbox=mailbox,
                                     require_test=True)
    return changes


def delete_mailbox(mailbox: Mailbox, *, actor: User | None) -> int:
    """Remove a mailbox with its routes, folder states, alerts and outgoing server. Its tickets
    and stored mail stay (they no longer name a mailbox). Returns how many tickets it had."""
    from portal.inbound.graph_push import forget_subscriptions  # noqa: PLC0415 - it builds on this module

    tickets = db.session.scalar(select(func.count()).select_from(Ticket).where(Ticket.mailbox_id == mailbox.id))
    forget_subscriptions(mailbox, current_app.config["TIDEMARK_ENCRYPTION_KEY"])
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
    if values.get("protocol") == "graph":
        return _probe_graph(values, keys, mailbox, probe, actor)
    if values.get("protocol") == "lmtp":
        return probe_listener(current_app.config["TIDEMARK_LMTP_LISTEN"])
    wanted = {k: values.get(k) for k in ("protocol", "security", "host", "port", "timeout")}
    if wanted["timeout"] in (None, ""):
        wanted["timeout"] = mailbox.timeout if mailbox else 30
    clean = _clean_settings(wanted, None)
    if not (clean.get("host") or "").strip():
        raise ValidationError({"host": ["Give the server's host name to test the connection."]})
    username = (values.get("username") or "").strip()
    reach = server_reach(actor)
    if values.get("auth", mailbox.auth if mailbox else "password") == "oauth2":
        try:
            token = _probe_token(mailbox, {**clean, "username": username}, keys, reach)
        except TransportError as exc:  # no token: the grant's words, nothing sent to the server
            return ProbeResult(ok=False, message=exc.message, kind=exc.kind)
        stored, password = False, ""
    else:
        token = None
        stored = not values.get("password") and mailbox is not None and mailbox.password_encrypted is not None
        if stored and server_changed(mailbox, {**clean, "username": username}):
            raise ValidationError({"password": [RETYPE_PASSWORD]})
        password = password_of(mailbox, keys) if stored else values.get("password") or ""
    settings = ServerSettings(
        protocol=clean["protocol"], host=clean["host"].strip(), port=clean["port"], security=clean["security"],
        username=username, password=password,
        auth_identity=(values.get("shared_mailbox") or "").strip() or None, timeout=float(clean["timeout"]),
        verify_tls=bool(values.get("verify_tls", True)), ca_file=ca_file, reach=reach, token=token)
    result = (probe or test_connection)(settings)
    if stored or token:
        record_secret_test(actor, mailbox, "form test", settings.address, result.message,
                           secret="OAuth2 grant" if token else "saved password")
    return result


# An access token, like a saved password, only goes to the server the mailbox was saved with.
SAVE_BEFORE_TOKEN_TEST = ("The server or user name differs from the saved one: save the settings first, then test. "
                          "The mailbox's access token is only ever sent to the server it was saved for.")


def _probe_token(mailbox: Mailbox | None, typed: dict[str, Any], keys: str, reach: Reach) -> str:
    """A fresh access token of the saved mailbox for a form test of the server it was saved with."""
    if mailbox is None or mailbox.auth != "oauth2" or mailbox.oauth is None:
        raise ValidationError({"": [oauth_svc.NOT_CONNECTED]})
    if server_changed(mailbox, typed):
        raise ValidationError({"": [SAVE_BEFORE_TOKEN_TEST]})
    return access_token(mailbox, keys, reach=reach)


GRAPH_NEEDS_GRANT = "Graph is tested with the mailbox's token: save the mailbox and connect it first."
GRAPH_URL_CHANGED = ("The API URL differs from the saved one: save it first. A mailbox's token is only ever sent "
                     "to the API URL it was saved with.")


def _probe_graph(values: dict[str, Any], keys: str, mailbox: Mailbox | None, probe, actor: User | None):
    """"Test connection" of a Graph mailbox from the form: the saved grant's token, to the saved
    API URL only; in the mailbox's history as every test with a stored secret is."""
    if mailbox is None or mailbox.auth != "oauth2" or mailbox.oauth is None:
        raise ValidationError({"": [GRAPH_NEEDS_GRANT]})
    saved = (mailbox.api_url or GRAPH_API_URL).rstrip("/")
    typed = (values.get("api_url") or "").strip().rstrip("/") or saved
    if typed != saved:
        raise ValidationError({"api_url": [GRAPH_URL_CHANGED]})
    reach = server_reach(actor)
    try:
        token = access_token(mailbox, keys, reach=reach)
    except TransportError as exc:  # no token: the grant's words, nothing sent to Graph
        return ProbeResult(ok=False, message=exc.message, kind=exc.kind)
    address = (values.get("shared_mailbox") or values.get("address") or "").strip().lower() or mailbox.address
    timeout = values.get("timeout") if isinstance(values.get("timeout"), int) else mailbox.timeout
    settings = GraphSettings(api_url=saved, mailbox=address, token=token, timeout=float(timeout),
                             verify_tls=bool(values.get("verify_tls", True)), reach=reach)
    result = (probe or test_connection)(settings)
    record_secret_test(actor, mailbox, "form test", settings.address, result.message, secret="OAuth2 grant")
    return result

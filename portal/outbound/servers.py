"""Which server sends: a mailbox's own outgoing server, else (a Graph mailbox) Graph's sendMail
from the mailbox itself, else its MSP's own gateway, else the installation's default gateway; an
"incoming only" mailbox's mail always goes through a gateway. How to reach a stored server (SmtpSettings) is built here and nowhere else, for the
sending run and for test mail alike. Editing the servers, audited. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from portal import crypto
from portal.extensions import db
from portal.models import Mailbox, SmtpServer, User
from portal.models.base import utcnow
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address
from portal.services.mailbox_tokens import access_token
from portal.services.mailboxes import HOST_PATTERN, RETYPE_PASSWORD, graph_settings, server_changed, server_reach
from portal.transport.base import SECURITIES, TransportError
from portal.transport.graph import GraphSettings
from portal.transport.reach import Reach
from portal.transport.smtp import SmtpError, SmtpSettings, check_connection

SMTP_AUTH = ("password", "oauth2")


@dataclass(frozen=True)
class SendEnvironment:
    keys: str  # TIDEMARK_ENCRYPTION_KEY
    secret: bytes  # signs reference tokens and plus tags
    host: str  # the right-hand side of our Message-IDs and the loop header
    portal_url: str
    ca_file: str | None = None
    reach: Reach | None = None  # which addresses SMTP servers may resolve to; None: any


def send_environment(actor: User | None = None) -> SendEnvironment:
    """From the app's configuration (portal and workers alike). `actor`: who asks for a test
    send in a page; None (a job) is held to the address rule of several-MSP installations."""
    from flask import current_app  # noqa: PLC0415 - only the callers with an app use this

    cfg = current_app.config
    return SendEnvironment(keys=cfg["TIDEMARK_ENCRYPTION_KEY"], secret=cfg["SECRET_KEY"].encode(),
                           host=cfg["TIDEMARK_MAIL_HOST"], portal_url=cfg["TIDEMARK_PORTAL_URL"],
                           ca_file=cfg["TIDEMARK_CA_FILE"], reach=server_reach(actor))


# --- which server ------------------------------------------------------------------------------------


def installation_gateway() -> SmtpServer | None:
    """The installation's default gateway (neither a mailbox's nor an MSP's)."""
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_(None), SmtpServer.msp_id.is_(None)))


def msp_gateway(msp_id: int) -> SmtpServer | None:
    """The MSP's own gateway only (no fallback to the installation's)."""
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_(None), SmtpServer.msp_id == msp_id))


def default_gateway(msp_id: int | None = None) -> SmtpServer | None:
    """The gateway an MSP's mail goes through when no mailbox server sends it: the MSP's own,
    else the installation's (msp_id None: the installation's)."""
    if msp_id is None:
        return installation_gateway()
    # One query for both, the MSP's own first (the dashboard asks on every refresh).
    return db.session.scalar(select(SmtpServer).where(
        SmtpServer.mailbox_id.is_(None), or_(SmtpServer.msp_id == msp_id, SmtpServer.msp_id.is_(None)))
        .order_by(SmtpServer.msp_id.is_(None)).limit(1))


def outgoing_server(mailbox: Mailbox | None, msp_id: int | None = None) -> SmtpServer | None:
    """The mailbox's own outgoing server, else its MSP's gateway, else the installation's. An
    "incoming only" mailbox's mail always goes through a gateway (DESIGN: "else the system
    default gateway"). Without a mailbox, `msp_id` says whose gateway."""
    if mailbox is not None and mailbox.sends_itself:
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))
        if own is not None:
            return own
    return default_gateway(mailbox.msp_id if mailbox is not None else msp_id)


def gateway_name(server: SmtpServer) -> str:
    """Which gateway, in the words of the pages and test mails."""
    return "the MSP's gateway" if server.msp_id is not None else "the default gateway"


def own_server(mailbox: Mailbox) -> SmtpServer | None:
    """The mailbox's own outgoing server only (no fallback to the gateway)."""
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))


def record_server_test(server: SmtpServer, ok: bool, message: str) -> None:
    """An outgoing server keeps the answer of its last test (a login, a test email), as a mailbox does."""
    server.last_test_at = utcnow()
    server.last_test_ok = ok
    server.last_test_message = message
    db.session.flush()


def check_gateway(server: SmtpServer, env: SendEnvironment, actor: User | None) -> tuple[bool, str]:
    """"Test connection" of a gateway: sign in and say so in plain words, kept as its last test and
    in the history of the MSP's settings (an MSP's gateway) or the installation's."""
    try:
        ok, words = True, f"Connected: {check_connection(smtp_settings(server, env))}."
    except TransportError as exc:
        ok, words = False, f"Not connected: {exc.message}"
    record_server_test(server, ok, words)
    if actor is not None:
        audit.record(actor, server.msp_id or actor.msp_id, "client" if server.msp_id else "installation",
                     server.msp_id or 0, "gateway tested", {"result": [None, words]})
    return ok, words


def smtp_settings(server: SmtpServer, env: SendEnvironment) -> SmtpSettings:
    """How to reach a stored outgoing server: its password decrypted, or the fresh access token of
    its mailbox's grant (AUTH XOAUTH2); the installation's CA file and address rule. Raises
    SmtpError when the grant gives no token (temporary when the sign-in service is down)."""
    username, password, token = server.username, None, None
    if server.auth == "oauth2":
        mailbox = db.session.get(Mailbox, server.mailbox_id) if server.mailbox_id is not None else None
        if mailbox is None:
            raise SmtpError("auth", f"the outgoing server {server.host} signs in with a mailbox's OAuth2 grant but "
                                    "belongs to no mailbox", temporary=False)
        try:
            token = access_token(mailbox, env.keys, reach=env.reach)
        except TransportError as exc:
            raise SmtpError("connect" if exc.transient else "auth", exc.message, temporary=exc.transient) from None
        # XOAUTH2's user=: the mailbox that sends (a shared one, as its fetch opens it).
        username = server.username or mailbox.shared_mailbox or mailbox.username
    elif server.password_encrypted:
        password = crypto.decrypt(env.keys, server.password_encrypted)
    return SmtpSettings(host=server.host, port=server.port, security=server.security, username=username,
                        password=password, timeout=server.timeout, verify_tls=server.verify_tls, ca_file=env.ca_file,
                        from_address=server.from_address, reach=env.reach, token=token)


def outgoing_settings(mailbox: Mailbox | None, env: SendEnvironment,
                      msp_id: int | None = None) -> SmtpSettings | GraphSettings | None:
    """How to reach the server the mailbox's mail goes through (None: the MSP's gateway, else the
    installation's); None when
    there is no server to use. A Graph mailbox without an SMTP server of its own sends through
    Graph (raises TransportError when it has no usable token), unless it is incoming only."""
    if mailbox is not None and mailbox.sends_itself and mailbox.protocol == "graph" and own_server(mailbox) is None:
        return graph_settings(mailbox, env.keys, reach=env.reach)
    server = outgoing_server(mailbox, msp_id)
    return smtp_settings(server, env) if server is not None else None


# --- editing --------------------------------------------------------------------------------------------


def save_smtp_server(values: dict, *, keys: str, mailbox: Mailbox | None = None,
                     msp_id: int | None = None) -> tuple[SmtpServer, bool]:
    """Create or update the installation's default gateway (neither mailbox nor msp_id), an
    MSP's own gateway (msp_id) or a mailbox's outgoing server from plain values (host, port, security, username, password, from, timeout, verify_tls).
    Returns the server and whether anything changed."""
    errors: dict[str, list[str]] = {}
    host = str(values.get("host") or "").strip()
    if not HOST_PATTERN.match(host):
        errors["host"] = [f"{host!r} is not a host name or IP address."]
    security = values.get("security", "starttls")
    if security not in SECURITIES:
        errors["security"] = ["The security is ssl, starttls or none."]
    port = values.get("port") or {"ssl": 465, "starttls": 587, "none": 25}.get(security, 587)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        errors["port"] = ["The port is a number from 1 to 65535."]
    timeout = values.get("timeout") or 30
    if not isinstance(timeout, int) or not 1 <= timeout <= 600:
        errors["timeout"] = ["The timeout is a whole number of seconds from 1 to 600."]
    auth = _checked_auth(values, mailbox, errors)
    from_address = values.get("from") or values.get("from_address")
    if from_address:
        try:
            from_address = normalise_address(str(from_address))
        except AllowEntryError as exc:
            errors["from"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    server = own_server(mailbox) if mailbox else msp_gateway(msp_id) if msp_id is not None else installation_gateway()
    before = None if server is None else (server.host, server.port, server.security, server.username,
                                          server.from_address, server.timeout, server.verify_tls, server.auth,
                                          server.password_encrypted)
    if server is None:
        server = SmtpServer(mailbox_id=mailbox.id if mailbox else None, msp_id=None if mailbox else msp_id, host=host)
        db.session.add(server)
    password = values.get("password") if auth == "password" else None
    if auth == "oauth2":
        server.password_encrypted = None  # the grant signs in; a password would wait here unused
    if not password and server.password_encrypted is not None and server_changed(
            server, {"host": host, "port": port, "username": values.get("username") or None},
            ("host", "port", "username")):
        raise ValidationError({"password": [RETYPE_PASSWORD]})
    server.host, server.port, server.security = host, port, security
    server.username = values.get("username") or None
    server.from_address = from_address or None
    server.timeout = timeout
    server.verify_tls = bool(values.get("verify_tls", True))
    server.auth = auth
    changed = before != (server.host, server.port, server.security, server.username, server.from_address,
                         server.timeout, server.verify_tls, server.auth, server.password_encrypted)
    if password and (server.password_encrypted is None or crypto.decrypt(keys, server.password_encrypted) != password):
        server.password_encrypted = crypto.encrypt(keys, str(password))
        changed = True
    db.session.flush()
    return server, changed


def _checked_auth(values: dict, mailbox: Mailbox | None, errors: dict) -> str:
    """How the server signs in: a password, or (a mailbox's own server only) the mailbox's grant."""
    auth = values.get("auth") or "password"
    if auth not in SMTP_AUTH:
        errors["auth"] = [f"{auth!r} is not one of {', '.join(SMTP_AUTH)}."]
    elif auth == "oauth2" and (mailbox is None or mailbox.auth != "oauth2"):
        errors["auth"] = ["Only the outgoing server of a mailbox that signs in with OAuth2 can use its grant."
                          if mailbox is not None else
                          "The default gateway has no OAuth2 grant: it signs in with a user name and password."]
    elif auth == "oauth2" and values.get("password"):
        errors["password"] = ["This server signs in with the mailbox's OAuth2 grant: leave the password empty."]
    return auth


def smtp_server_as_config(server: SmtpServer, keys: str, with_secrets: bool) -> dict:
    out = {"host": server.host, "port": server.port, "security": server.security, "username": server.username,
           "from": server.from_address, "timeout": server.timeout, "verify_tls": server.verify_tls}
    if server.auth != "password":
        out["auth"] = server.auth
    if with_secrets and server.password_encrypted:
        out["password"] = crypto.decrypt(keys, server.password_encrypted)
    return out


# --- a mailbox's own server, audited on the mailbox --------------------------------------------------------


def _server_snapshot(server) -> dict:
    if server is None:
        return {}
    return {"host": server.host, "port": server.port, "security": server.security, "username": server.username,
            "from": server.from_address, "timeout": server.timeout, "verify_tls": server.verify_tls,
            "password": "(set)" if server.password_encrypted else None, "auth": server.auth}


def save_outgoing_server(mailbox: Mailbox, values: dict[str, Any], *, keys: str, actor: User | None) -> dict:
    """The mailbox's own SMTP server, through save_smtp_server, audited on the mailbox."""
    own = own_server(mailbox)
    changes = _saved(own, values, "outgoing", keys=keys, mailbox=mailbox)
    if changes:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id,
                     "outgoing server " + ("set" if own is None else "changed"), changes)
    return changes


def _saved(own: SmtpServer | None, values: dict[str, Any], label: str, *, keys: str, **owner) -> dict:
    """Save a mailbox's server or an MSP's gateway; what changed, as its history words it."""
    before = _server_snapshot(own)
    old_secret = own.password_encrypted if own is not None else None
    server, _changed = save_smtp_server(values, keys=keys, **owner)
    changes = {f"{label} {k}": v for k, v in audit.diff(before, _server_snapshot(server)).items()}
    if old_secret is not None and server.password_encrypted != old_secret:
        changes.setdefault(f"{label} password", ["(set)", "(changed)"])
    return changes


def _removed(own: SmtpServer, label: str) -> dict:
    """Delete a mailbox's server or an MSP's gateway; what went, as its history words it."""
    changes = {f"{label} {k}": v for k, v in audit.diff(_server_snapshot(own), {}).items()}
    db.session.delete(own)
    return changes


def remove_outgoing_server(mailbox: Mailbox, *, actor: User | None) -> bool:
    """Back to the default gateway."""
    own = own_server(mailbox)
    if own is None:
        return False
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "outgoing server removed", _removed(own, "outgoing"))
    db.session.flush()
    return True


# --- an MSP's own gateway, audited on the MSP ----------------------------------------------------------------


def save_msp_gateway(msp_id: int, values: dict[str, Any], *, keys: str, actor: User | None) -> dict:
    """The MSP's own gateway, through save_smtp_server, audited on the MSP."""
    own = msp_gateway(msp_id)
    changes = _saved(own, values, "gateway", keys=keys, msp_id=msp_id)
    if changes:
        audit.record(actor, msp_id, "client", msp_id, "gateway " + ("set" if own is None else "changed"), changes)
    return changes


def remove_msp_gateway(msp_id: int, *, actor: User | None) -> bool:
    """Back to the installation's gateway."""
    own = msp_gateway(msp_id)
    if own is None:
        return False
    audit.record(actor, msp_id, "client", msp_id, "gateway removed", _removed(own, "gateway"))
    db.session.flush()
    return True

"""Which server sends: a mailbox's own outgoing server, else (a Graph mailbox) Graph's sendMail
from the mailbox itself, else the installation's default gateway. How to reach a stored server (SmtpSettings) is built here and nowhere else, for the
sending run and for test mail alike. Editing the servers, audited. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.models import Mailbox, SmtpServer, User
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address
from portal.services.mailbox_tokens import access_token
from portal.services.mailboxes import HOST_PATTERN, RETYPE_PASSWORD, graph_settings, server_changed, server_reach
from portal.transport.base import SECURITIES, TransportError
from portal.transport.graph import GraphSettings
from portal.transport.reach import Reach
from portal.transport.smtp import SmtpError, SmtpSettings

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


def default_gateway() -> SmtpServer | None:
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_(None)))


def outgoing_server(mailbox: Mailbox | None) -> SmtpServer | None:
    """The mailbox's own outgoing server, else the installation's default gateway."""
    if mailbox is not None:
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))
        if own is not None:
            return own
    return default_gateway()


def own_server(mailbox: Mailbox) -> SmtpServer | None:
    """The mailbox's own outgoing server only (no fallback to the gateway)."""
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))


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


def outgoing_settings(mailbox: Mailbox | None, env: SendEnvironment) -> SmtpSettings | GraphSettings | None:
    """How to reach the server the mailbox's mail goes through (None: the gateway's); None when
    there is no server to use. A Graph mailbox without an SMTP server of its own sends through
    Graph (raises TransportError when it has no usable token)."""
    if mailbox is not None and mailbox.protocol == "graph" and own_server(mailbox) is None:
        return graph_settings(mailbox, env.keys, reach=env.reach)
    server = outgoing_server(mailbox)
    return smtp_settings(server, env) if server is not None else None


# --- editing --------------------------------------------------------------------------------------------


def save_smtp_server(values: dict, *, keys: str, mailbox: Mailbox | None = None) -> tuple[SmtpServer, bool]:
    """Create or update the default gateway (mailbox None) or a mailbox's outgoing server
    from plain values (host, port, security, username, password, from, timeout, verify_tls).
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
    query = select(SmtpServer).where(SmtpServer.mailbox_id == (mailbox.id if mailbox else None)) if mailbox else \
        select(SmtpServer).where(SmtpServer.mailbox_id.is_(None))
    server = db.session.scalar(query)
    before = None if server is None else (server.host, server.port, server.security, server.username,
                                          server.from_address, server.timeout, server.verify_tls, server.auth,
                                          server.password_encrypted)
    if server is None:
        server = SmtpServer(mailbox_id=mailbox.id if mailbox else None, host=host)
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
    before = _server_snapshot(own)
    old_secret = own.password_encrypted if own is not None else None
    server, _changed = save_smtp_server(values, keys=keys, mailbox=mailbox)
    changes = {f"outgoing {k}": v for k, v in audit.diff(before, _server_snapshot(server)).items()}
    if old_secret is not None and server.password_encrypted != old_secret:
        changes.setdefault("outgoing password", ["(set)", "(changed)"])
    if changes:
        audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id,
                     "outgoing server " + ("set" if own is None else "changed"), changes)
    return changes


def remove_outgoing_server(mailbox: Mailbox, *, actor: User | None) -> bool:
    """Back to the default gateway."""
    own = own_server(mailbox)
    if own is None:
        return False
    changes = {f"outgoing {k}": v for k, v in audit.diff(_server_snapshot(own), {}).items()}
    db.session.delete(own)
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "outgoing server removed", changes)
    db.session.flush()
    return True

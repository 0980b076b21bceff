"""A mailbox's "Test connection" as its direction asks (the incoming server, the outgoing one, or
both), the outgoing server's own last test, the server's folder list for the form's picker, and
the list of folders it found. Flush, never commit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flask import current_app
from redis.exceptions import RedisError

from portal.extensions import db
from portal.jobs import app_redis
from portal.models import Mailbox, User
from portal.models.base import utcnow
from portal.outbound.servers import gateway_name, outgoing_server, record_server_test, send_environment, smtp_settings
from portal.services import mailboxes as svc
from portal.transport import smtp
from portal.transport.base import TransportError
from portal.transport.probe import ProbeResult

log = logging.getLogger(__name__)

# The folder list of the last successful test, for the form's picker: a day, then test again.
FOLDERS_TTL = 24 * 3600
# A server may list any number of folders; the form offers this many at most.
FOLDERS_MOST = 1000


# --- the test ---------------------------------------------------------------------------------------------


def test_mailbox(mailbox: Mailbox, keys: str, *, ca_file: str | None = None, actor: User | None = None,
                 probe: Callable | None = None, smtp_check: Callable | None = None) -> ProbeResult:
    """"Test connection": what the mailbox's direction uses, now. Incoming: its server (the folder
    list kept for the form); outgoing: the server its mail goes through, logged in, nothing sent;
    both: one then the other. The answer is kept on the mailbox, the outgoing part also on its own
    outgoing server."""
    parts: list[ProbeResult] = []
    if mailbox.fetches:
        incoming = svc.check_connection(mailbox, keys, ca_file=ca_file, probe=probe, actor=actor)
        parts.append(incoming)
        if incoming.ok:
            remember_folders(mailbox.id, incoming.folders if mailbox.protocol != "pop3" else ["INBOX"])
    if mailbox.direction != "incoming":
        parts.append(_test_outgoing(mailbox, actor, smtp_check or smtp.check_connection))
    result = ProbeResult(ok=all(p.ok for p in parts), message=" ".join(p.message for p in parts),
                         folders=parts[0].folders, messages=parts[0].messages, kind=next(
                             (p.kind for p in parts if not p.ok), None))
    mailbox.last_test_at = utcnow()
    mailbox.last_test_ok = result.ok
    mailbox.last_test_message = result.message
    db.session.flush()
    return result


def _test_outgoing(mailbox: Mailbox, actor: User | None, check: Callable) -> ProbeResult:
    """Log in to the outgoing server this mailbox's mail goes through (a Graph mailbox without
    one of its own sends through Graph: its incoming test tried that API already)."""
    server = outgoing_server(mailbox)
    if server is None:
        if mailbox.protocol == "graph" and mailbox.sends_itself:
            if mailbox.fetches:
                return ProbeResult(True, "Its mail is sent through Microsoft Graph.")
            return svc.check_connection(mailbox, current_app.config["TIDEMARK_ENCRYPTION_KEY"], actor=actor,
                                        ca_file=current_app.config["TIDEMARK_CA_FILE"])
        # Fetching works without it: only an outgoing-only mailbox fails its test for want of one.
        only = mailbox.direction == "outgoing"
        return ProbeResult(not only, "Outgoing: there is no outgoing server for this mailbox and no default "
                                     "gateway, so its mail cannot be sent yet.", kind="config" if only else None)
    env = send_environment(actor)
    which = "its own outgoing server" if server.mailbox_id == mailbox.id else gateway_name(server)
    try:
        words = check(smtp_settings(server, env))
    except TransportError as exc:
        ok, message = False, f"Outgoing ({which}): {exc.message}"
    else:
        ok, message = True, f"Outgoing ({which}): {words}."
    record_server_test(server, ok, message)
    if server.password_encrypted is not None or server.auth == "oauth2":
        svc.record_secret_test(actor, mailbox, "outgoing server test", f"{server.host}:{server.port}", message,
                               secret="OAuth2 grant" if server.auth == "oauth2" else "saved password")
    return ProbeResult(ok, message, kind=None if ok else "outgoing")


# --- the folder picker --------------------------------------------------------------------------------------


def _folders_key(mailbox_id: int) -> str:
    return f"{current_app.config['TIDEMARK_QUEUE']}:mailbox-folders:{mailbox_id}"


def remember_folders(mailbox_id: int, folders: list[str]) -> None:
    """Keep the server's folder list for the form (Redis, FOLDERS_TTL); a courtesy, never an error."""
    try:
        app_redis(quick=True).set(_folders_key(mailbox_id), json.dumps(sorted(set(folders))[:FOLDERS_MOST]),
                                  ex=FOLDERS_TTL)
    except (RedisError, OSError) as exc:
        log.warning("folder list of mailbox %s not kept: %s", mailbox_id, exc)


def known_folders(mailbox_id: int | None) -> list[str]:
    """The folders the last successful test found (empty: none known, type them)."""
    if mailbox_id is None:
        return []
    try:
        raw = app_redis(quick=True).get(_folders_key(mailbox_id))
    except (RedisError, OSError):
        return []
    return json.loads(raw) if raw else []

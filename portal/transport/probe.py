""""Test connection": connect, log in, look around, and answer in plain words. Never raises."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from portal.transport import graph
from portal.transport.base import ServerSettings, TransportError, scrub
from portal.transport.imap import ImapSession
from portal.transport.pop3 import Pop3Session

log = logging.getLogger("portal.transport.probe")

_SECURITY_WORDS = {"ssl": "SSL/TLS", "starttls": "STARTTLS", "none": "no encryption"}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str
    folders: list[str] = field(default_factory=list)
    messages: int | None = None
    capabilities: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kind: str | None = None  # the TransportError kind when ok is False


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


def test_connection(settings: ServerSettings | graph.GraphSettings) -> ProbeResult:
    started = time.monotonic()
    try:
        if settings.protocol == "graph":
            folders, messages, capabilities, where = graph.probe(settings)
        elif settings.protocol == "imap":
            folders, messages, capabilities, where = _probe_imap(settings)
        else:
            folders, messages, capabilities, where = _probe_pop3(settings)
    except TransportError as exc:
        return ProbeResult(False, exc.message, seconds=time.monotonic() - started, kind=exc.kind)
    except Exception as exc:  # noqa: BLE001 - the probe reports, it does not crash the page
        log.exception("connection test to %s failed unexpectedly", settings.address)
        message = scrub(f"unexpected error while testing {settings.address}: {type(exc).__name__}: {exc}",
                        settings)
        return ProbeResult(False, message, seconds=time.monotonic() - started, kind="protocol")
    if settings.protocol == "graph":
        message = f"Connected to Microsoft Graph at {settings.api_url} for {settings.mailbox}; {where} has {_count(messages)}."
        return ProbeResult(True, message, folders, messages, capabilities, time.monotonic() - started)
    security = _SECURITY_WORDS[settings.security]
    with_ = "without encryption" if settings.security == "none" else f"with {security}"
    message = (f"Connected to {settings.address} {with_} as {settings.login_name}; "
               f"{where} has {_count(messages)}.")
    return ProbeResult(True, message, folders, messages, capabilities, time.monotonic() - started)


def _probe_imap(settings: ServerSettings):
    with ImapSession(settings) as session:
        folders = session.list_folders()
        state = session.select("INBOX", readonly=True)
        return folders, state.exists, session.capabilities, "INBOX"


def _probe_pop3(settings: ServerSettings):
    with Pop3Session(settings) as session:
        count, _size = session.stat()
        return [], count, session.capabilities, "the mailbox"


test_connection.__test__ = False  # keep pytest from collecting it where tests import it

"""Connection settings, the one error type, and the error translation shared by IMAP and POP3.

Everything a person may read (TransportError.message, ProbeResult.message) is in plain words and
never contains the password or the access token.
"""

from __future__ import annotations

import errno
import imaplib
import logging
import os
import poplib
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from portal.transport import sasl

if TYPE_CHECKING:  # pragma: no cover
    from portal.transport.reach import Reach

log = logging.getLogger("portal.transport")

PROTOCOLS = ("imap", "pop3")
SECURITIES = ("ssl", "starttls", "none")
KINDS = ("auth", "connect", "tls", "timeout", "protocol", "folder")
# Retrying later can help with these; a wrong password or an untrusted certificate stays wrong.
TRANSIENT_KINDS = frozenset({"connect", "timeout"})


def check_secret(password: str | None, token: str | None) -> None:
    """A login uses a password or an access token, never both."""
    if password and token:
        raise ValueError("give a password or an access token, not both")


def check_endpoint(security: str, port: int, timeout: float) -> None:
    """What every server connection needs, IMAP, POP3 or SMTP alike."""
    if security not in SECURITIES:
        raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be between 1 and 65535, not {port!r}")
    if timeout <= 0:
        raise ValueError("timeout must be positive")


@dataclass(frozen=True)
class ServerSettings:
    protocol: str  # "imap" | "pop3"
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str
    password: str = field(default="", repr=False)
    # SASL PLAIN authorization identity: log in as `username` but open this (shared) mailbox.
    # With a token it is XOAUTH2's user=: the mailbox to open (as Exchange Online reads it).
    auth_identity: str | None = None
    timeout: float = 30.0
    verify_tls: bool = True
    ca_file: str | None = None
    # Which addresses the host may resolve to (transport.reach); None: any, as typed.
    reach: "Reach | None" = field(default=None, repr=False)
    # An OAuth2 access token instead of the password: logs in with XOAUTH2 or OAUTHBEARER.
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        check_endpoint(self.security, self.port, self.timeout)
        check_secret(self.password, self.token)

    @property
    def token_user(self) -> str:
        """XOAUTH2's user=: the mailbox to open, whoever the token belongs to."""
        return self.auth_identity or self.username

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def login_name(self) -> str:
        """How the login reads in messages: 'support' or 'delegate for shared mailbox support'."""
        if self.auth_identity and self.auth_identity != self.username:
            return f"{self.username} (mailbox {self.auth_identity})"
        return self.username


class TransportError(Exception):
    """Any failure talking to a mail server, already in plain words.

    kind: auth | connect | tls | timeout | protocol | folder.
    transient: True when trying again later may work (connect, timeout, dropped connection).
    """

    def __init__(self, kind: str, message: str, transient: bool | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown TransportError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = kind in TRANSIENT_KINDS if transient is None else transient

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # Survives pickling (RQ, multiprocessing) with its kind and transient flag.
        return (type(self), (self.kind, self.message, self.transient))

    def __repr__(self) -> str:
        return f"TransportError(kind={self.kind!r}, transient={self.transient!r}, message={self.message!r})"


# A TLS context holds its own copy of the system's CA store (about 0.8 MB): hundreds of open
# connections (the IDLE watcher's) share one per kind instead, made again after an hour so that
# an updated CA store or CA file is read.
_CONTEXTS: dict[tuple, tuple[float, ssl.SSLContext]] = {}
_CONTEXTS_LOCK = threading.Lock()
CONTEXT_SECONDS = 3600.0


def tls_context(settings: ServerSettings) -> ssl.SSLContext:
    """The TLS context for these settings' certificate checks, shared (it is not changed after)."""
    key = (settings.verify_tls, settings.ca_file, _changed_at(settings.ca_file))
    now = time.monotonic()
    with _CONTEXTS_LOCK:
        made = _CONTEXTS.get(key)
        if made is None or now - made[0] > CONTEXT_SECONDS:
            made = _CONTEXTS[key] = (now, _new_tls_context(settings))
    return made[1]


def _changed_at(path: str | None) -> int | None:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None  # load_verify_locations says what is wrong with it


def _new_tls_context(settings: ServerSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif settings.ca_file:
        # In addition to the system store: a private CA must not untrust the public ones.
        context.load_verify_locations(cafile=settings.ca_file)
    return context


# --- error translation ---------------------------------------------------------------------------

_COMMAND_FAILED = re.compile(r"^[a-z_]+ failed: ")
_TIMINGS = re.compile(r"\s*\((?:[\d.]+ \+ )*[\d.]+ secs\)\.?$")
_BYTES_REPR = re.compile(r"""^b(['"])(.*)\1$""", re.S)


def server_text(exc: BaseException) -> str:
    """The server's own words out of an imaplib/poplib error, without Python's bytes repr."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("utf-8", "replace")
    # imapclient wraps e.g. "login failed: b'[AUTHENTICATIONFAILED] ...'".
    for prefix in ("login failed: ", "authenticate failed: ", "LOGIN command error: ",
                   "AUTHENTICATE command error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    match = _BYTES_REPR.match(text.strip())
    if match:
        text = match.group(2)
    if text.startswith("-ERR "):
        text = text[5:]
    text = _COMMAND_FAILED.sub("", text)
    # Dovecot appends its timings: "... (0.001 + 0.000 + 0.002 secs)."
    text = _TIMINGS.sub(".", text)
    return text.strip()


def scrub(text: str, settings: ServerSettings) -> str:
    for secret in (getattr(settings, "password", None), getattr(settings, "token", None)):
        if secret and secret in text:
            text = text.replace(secret, "********")
    return text


def _os_error_words(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "the connection was reset"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "the host is unreachable"
    return exc.strerror or str(exc) or type(exc).__name__


# The checkbox on the mailbox and outgoing server forms that allows a certificate no CA vouches
# for (portal/mailboxes/forms.py labels it with these words).
VERIFY_TLS_LABEL = "Check the server's TLS certificate"
UNTRUSTED_HINT = (f". If this is your own server with a self-signed certificate, untick “{VERIFY_TLS_LABEL}” "
                  "on its form (or give its CA in TIDEMARK_CA_FILE)")


def translate(exc: BaseException, settings: ServerSettings, stage: str) -> TransportError:
    """Turn a low-level exception into a TransportError.

    stage: "connect" (TCP + greeting), "tls", "login" or a short verb phrase of what we were doing
    ("fetching messages"), used in the message.
    """
    where = settings.address
    host = settings.host
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        if "hostname" in str(reason).lower() or "ip address mismatch" in str(reason).lower():
            message = f"the TLS certificate of {host} does not match that name: {reason}"
        else:
            message = f"the TLS certificate of {host} is not trusted: {reason}{UNTRUSTED_HINT}"
        return TransportError("tls", scrub(message, settings), transient=False)
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        hint = ""
        if reason and "WRONG_VERSION_NUMBER" in str(reason):
            hint = " (does this port speak TLS? check the security setting)"
        message = f"the TLS handshake with {where} failed: {reason}{hint}"
        return TransportError("tls", scrub(message, settings), transient=False)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        if stage == "connect":
            message = f"could not connect to {where}: no answer within {_seconds(settings.timeout)}"
        else:
            message = (f"{where} stopped answering while {_doing(stage)} "
                       f"(no answer within {_seconds(settings.timeout)})")
        return TransportError("timeout", message)
    if isinstance(exc, OSError):
        words = _os_error_words(exc)
        if stage == "connect":
            message = f"could not connect to {where}: {words}"
        else:
            message = f"the connection to {where} was lost while {_doing(stage)}: {words}"
        return TransportError("connect", scrub(message, settings))
    if isinstance(exc, (imaplib.IMAP4.abort, PopDropped)):
        # imaplib raises abort when the socket hits EOF or a command cannot be sent.
        if stage == "connect":
            # Before a proper greeting we do not know what answers: its bytes go to the log only.
            if "EOF" in server_text(exc) or isinstance(exc, PopDropped):
                message = f"the connection to {where} was lost while connecting: the server closed the connection"
                return TransportError("connect", message)
            return TransportError("protocol", unlike_server(settings, server_text(exc)), transient=False)
        message = f"the connection to {where} was lost while {_doing(stage)}: {server_text(exc)}"
        return TransportError("connect", scrub(message, settings))
    if isinstance(exc, (imaplib.IMAP4.error, poplib.error_proto)):
        said = server_text(exc)
        if sasl.NOT_CONNECTED.lower() in said.lower():
            return TransportError("auth", sasl.not_connected(where, settings.login_name), transient=False)
        if stage == "login" and getattr(settings, "token", None):
            return TransportError("auth", scrub(sasl.refused_token(settings.login_name, said), settings),
                                  transient=False)
        if stage == "login":
            message = f"authentication failed for {settings.login_name}: the server said {said}"
            return TransportError("auth", scrub(message, settings))
        if stage == "connect":
            return TransportError("protocol", unlike_server(settings, said))
        else:
            message = f"{where} refused {_doing(stage)}: the server said {said}"
        return TransportError("protocol", scrub(message, settings))
    message = f"unexpected error while {_doing(stage)} with {where}: {type(exc).__name__}: {exc}"
    return TransportError("protocol", scrub(message, settings), transient=False)


_SERVER_NAMES = {"imap": "an IMAP", "pop3": "a POP3", "smtp": "an SMTP"}


def unlike_server(settings, said: str | bytes) -> str:
    """The words for a port that answers, but not in the protocol asked for. What it said stays
    in the log for the operator: echoed to an MSP admin, it would show them other services."""
    name = _SERVER_NAMES[settings.protocol]
    log.warning("%s does not answer like %s server; it said %r", settings.address, name, said)
    return f"{settings.address} does not answer like {name} server (is the port right?)"


def _seconds(value: float) -> str:
    return "1 second" if value == 1 else f"{value:g} seconds"


def _doing(stage: str) -> str:
    return {
        "connect": "connecting",
        "tls": "starting TLS",
        "login": "logging in",
    }.get(stage, stage)


class PopDropped(poplib.error_proto):
    """The POP3 server closed the connection (poplib reports that as '-ERR EOF')."""


@contextmanager
def translated(settings: ServerSettings, stage: str) -> Iterator[None]:
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a TransportError
        error = translate(exc, settings, stage)
        log.info("%s: %s %s", settings.address, error.kind, error.message)
        raise error from exc

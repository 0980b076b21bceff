"""A real SMTP server (aiosmtpd on loopback) that keeps every message it receives.

Fixtures: `smtp_server_session` (started once) and `smtp_server` (the same server, emptied and
reset before each test). Import both with `from tests.smtp import *`.

One server listens on two ports:
- `port`: plain SMTP that offers STARTTLS (not required) and AUTH PLAIN/LOGIN, also without TLS;
- `ssl_port`: the same behind implicit TLS (SMTPS).
The certificate comes from the test CA of tests/dovecot.py (`ca_file`).
Known login: SMTP_USER / SMTP_PASSWORD. Logging in is optional.
AUTH XOAUTH2 is offered too: `server.token_check = introspecting(url)` (or any callable taking
the user= and the token, answering True, False or the refusal line to send) decides; without one
every token is refused. A refused token gets what
Gmail sends: a 334 challenge holding a JSON error, then 535 after the client's empty line.

Chosen answers: `server.rcpt_replies["busy"] = "450 4.2.1 Mailbox busy"` refuses every recipient
whose local part is `busy` (or a whole address as the key) with that reply; `mail_reply` and
`data_reply` do the same for MAIL FROM and the end of DATA. By default busy@ gets 450 and gone@
gets 550. `drop_after_data = N`: the next N messages are received whole, then the connection
breaks before the server answers (nothing kept).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import json
import shutil
import ssl
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from portal.transport.smtp import SmtpSettings
from tests.dovecot import _make_tls, unused_port

__all__ = ["SMTP_PASSWORD", "SMTP_USER", "Received", "SmtpServer", "TokenLogin", "introspecting", "smtp_server",
           "smtp_server_session"]

SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-Pässword"
DEFAULT_RCPT_REPLIES = {
    "busy": "450 4.2.1 Mailbox busy, try again later",
    "gone": "550 5.1.1 User unknown",
}


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None
    peer: object = None
    _parsed: EmailMessage | None = field(default=None, repr=False)

    @property
    def message(self) -> EmailMessage:
        if self._parsed is None:
            self._parsed = email.message_from_bytes(self.data, policy=policy.default)
        return self._parsed


@dataclass(frozen=True)
class TokenLogin:
    """What aiosmtpd keeps of an XOAUTH2 login (never the token)."""
    login: bytes
    mechanism: str = "XOAUTH2"


# Gmail's answer to a token it does not accept, before its 535.
TOKEN_ERROR_CHALLENGE = {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}


def introspecting(url: str, client_id: str | None = None, client_secret: str | None = None,
                  grants: dict[str, set[str]] | None = None):
    """A token check that asks an RFC 7662 introspection endpoint, as Dovecot's oauth2 passdb does:
    the token must be active and issued to user= (its username or email), or, as Exchange lets a
    delegate or the app send as a shared mailbox, to someone in grants[user=]."""
    def check(user: str, token: str) -> bool:
        request = urllib.request.Request(url, data=urllib.parse.urlencode({"token": token}).encode(),
                                         method="POST")
        if client_id:
            basic = base64.b64encode(f"{client_id}:{client_secret or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
        names = {str(answer.get(key) or "").lower() for key in ("username", "email")}
        allowed = {user.lower()} | {name.lower() for name in (grants or {}).get(user.lower(), ())}
        return answer.get("active") is True and bool(names & allowed)
    return check


def _parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    try:
        fields = dict(part.split("=", 1) for part in base64.b64decode(blob).decode().split("\x01") if part)
    except ValueError:
        return None
    auth = fields.get("auth", "")
    if not fields.get("user") or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth[len("Bearer "):]


class _Handler:
    def __init__(self, server: "SmtpServer"):
        self.server = server

    async def auth_XOAUTH2(self, smtp, args):  # noqa: N802 - aiosmtpd finds mechanisms by this name
        blob = args[1].encode() if len(args) > 1 else await smtp.challenge_auth("")
        parsed = _parse_xoauth2(blob) if isinstance(blob, bytes) else None
        if parsed is None:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode the response")
        user, token = parsed
        check = self.server.token_check
        verdict = bool(check) and await asyncio.to_thread(check, user, token)
        ok = verdict is True
        self.server.auth_attempts.append((user, ok))
        if ok:
            return AuthResult(success=True, auth_data=TokenLogin(user.encode()))
        if isinstance(verdict, str):  # the check chose the refusal, e.g. Microsoft's 5.7.139
            return AuthResult(success=False, handled=False, message=verdict)
        await smtp.challenge_auth(json.dumps(TOKEN_ERROR_CHALLENGE))
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted (token refused)")

    async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
        if self.server.mail_reply:
            return self.server.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        replies = self.server.rcpt_replies
        reply = replies.get(address.lower()) or replies.get(address.partition("@")[0].lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        if self.server.drop_after_data:
            # The connection breaks before the answer to DATA: nothing was accepted, the client
            # cannot know, and must try again (RFC 5321 4.1.1.4: the server keeps nothing).
            self.server.drop_after_data -= 1
            smtp.transport.abort()
            return "421 4.4.2 Connection dropped"
        if self.server.data_reply:
            return self.server.data_reply
        auth = session.auth_data
        login = auth.login.decode("utf-8", "replace") if isinstance(auth, (LoginPassword, TokenLogin)) else None
        tls = session.ssl is not None or smtp.transport.get_extra_info("ssl_object") is not None
        received = Received(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content or envelope.content,
            tls=tls,
            login=login,
            peer=session.peer,
        )
        with self.server.lock:
            self.server.messages.append(received)
            self.server.count += 1
        if self.server.on_message:
            self.server.on_message()  # before the answer: e.g. the client's database goes away now
        if self.server.keep is False:
            self.server.messages.clear()
        return f"250 2.0.0 Ok: queued as Q{self.server.count}"


class SmtpServer:
    """aiosmtpd on 127.0.0.1: one plain+STARTTLS port and one implicit-TLS port."""

    def __init__(self, root: Path):
        self.root = root
        self.host = "127.0.0.1"
        self.port = self.ssl_port = 0
        self.ca_file = ""
        self.messages: list[Received] = []
        self.count = 0
        self.keep = True  # False: count messages but keep none (benchmarks)
        self.lock = threading.Lock()
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.auth_attempts: list[tuple[str, bool]] = []
        self.token_check = None  # (user, token) -> bool, for AUTH XOAUTH2
        self._controllers: list[Controller] = []
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
        self.rcpt_replies = dict(DEFAULT_RCPT_REPLIES)
        self.mail_reply = self.data_reply = None
        self.drop_after_data = 0  # the next N transactions: the connection breaks after DATA
        self.on_message = None  # called with nothing once a message is kept, before the 250
        self.auth_attempts = []
        self.token_check = None
        self.keep = True

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
              and auth_data.password.decode("utf-8", "replace") == SMTP_PASSWORD)
        login = auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else ""
        self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> "SmtpServer":
        ca_file, cert, key = _make_tls(self.root / "tls")
        self.ca_file = str(ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        handler = _Handler(self)
        common = dict(authenticator=self._authenticate, auth_require_tls=False, decode_data=False,
                      data_size_limit=50 * 1024 * 1024, server_hostname="smtp.test.example")
        self.port, self.ssl_port = unused_port(), unused_port()
        plain = Controller(handler, hostname=self.host, port=self.port, tls_context=context, **common)
        secure = Controller(handler, hostname=self.host, port=self.ssl_port, ssl_context=context, **common)
        for controller in (plain, secure):
            controller.start()
            self._controllers.append(controller)
        return self

    def stop(self) -> None:
        while self._controllers:
            self._controllers.pop().stop()

    # --- helpers for tests ---------------------------------------------------------------------

    def settings(self, security: str = "none", *, login: bool = False, **overrides) -> SmtpSettings:
        values = dict(
            host=self.host, port=self.ssl_port if security == "ssl" else self.port, security=security,
            timeout=10.0, ca_file=self.ca_file if security != "none" else None,
            from_address="support@msp.example",
        )
        if login:
            values.update(username=SMTP_USER, password=SMTP_PASSWORD)
        values.update(overrides)
        return SmtpSettings(**values)

    def last(self) -> Received:
        assert self.messages, "the SMTP server received nothing"
        return self.messages[-1]


@contextlib.contextmanager
def running_smtp_server():
    """An aiosmtpd on loopback in a folder of its own, stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="tmsmtp-"))
    server = SmtpServer(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def smtp_server_session():
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def smtp_server(smtp_server_session) -> SmtpServer:
    """The session's SMTP server, emptied, with the default chosen answers."""
    smtp_server_session.reset()
    yield smtp_server_session
    smtp_server_session.reset()

"""Sending mail by SMTP: SSL/TLS, STARTTLS or none, password login, errors in plain words.

Every failure is an SmtpError (a TransportError) whose message a person can read ("the server
refused the recipient bob@x.example: 550 5.1.1 User unknown") and whose `temporary` flag says
whether to retry: 4xx replies, connection errors and timeouts are temporary, 5xx replies, TLS and
login problems are not. A message accepted for some recipients but refused for others is a
success with `SendResult.refused` filled in. The password never appears in a message or repr.
Plain Python: no Flask, SQLAlchemy or RQ.
"""
from __future__ import annotations

import base64
import copy
import logging
import re
import smtplib
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.utils import getaddresses

import portal.faults as faults
from portal.transport import reach, sasl
from portal.transport.base import (TransportError, check_endpoint, check_secret, scrub, tls_context, translate,
                                   unlike_server)

log = logging.getLogger("portal.transport.smtp")

SMTP_KINDS = ("connect", "timeout", "tls", "auth", "sender", "recipient", "message", "protocol")
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    security: str = "starttls"  # "ssl" | "starttls" | "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    verify_tls: bool = True
    ca_file: str | None = None
    from_address: str | None = None  # default envelope sender (and From, for the caller)
    local_hostname: str | None = None  # our EHLO name; None: this machine's FQDN
    # Which addresses the host may resolve to (transport.reach); None: any, as typed.
    reach: reach.Reach | None = field(default=None, repr=False)
    # An OAuth2 access token instead of the password (AUTH XOAUTH2); username is the mailbox
    # that sends, whoever the token belongs to.
    token: str | None = field(default=None, repr=False)

    protocol = "smtp"  # for the shared error translation in transport.base

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("an SMTP server needs a host")
        check_endpoint(self.security, self.port, self.timeout)
        check_secret(self.password, self.token)
        if self.token and not self.username:
            raise ValueError("an access token needs the username of the mailbox that sends")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def login_name(self) -> str:
        return self.username or ""


class SmtpError(TransportError):
    """A failed send, in plain words.

    kind: connect | timeout | tls | auth | sender | recipient | message | protocol.
    temporary: retrying later may work (4xx, connection trouble); False for 5xx and the like.
    code: the server's reply code when it gave one. refusals: per-recipient detail.
    """

    def __init__(self, kind: str, message: str, temporary: bool, code: int | None = None,
                 refusals: Sequence["Refusal"] = ()):
        if kind not in SMTP_KINDS:
            raise ValueError(f"unknown SmtpError kind {kind!r}")
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.temporary = self.transient = bool(temporary)
        self.code = code
        self.refusals = tuple(refusals)

    def __reduce__(self):
        return (type(self), (self.kind, self.message, self.temporary, self.code, self.refusals))

    def __repr__(self) -> str:
        return f"SmtpError(kind={self.kind!r}, temporary={self.temporary!r}, message={self.message!r})"


@dataclass(frozen=True)
class Refusal:
    address: str
    code: int
    reply: str

    @property
    def temporary(self) -> bool:
        return _temporary(self.code)

    def __str__(self) -> str:
        return f"the server refused the recipient {self.address}: {self.code} {self.reply}".rstrip()


@dataclass(frozen=True)
class SendResult:
    message_id: str | None
    envelope_from: str
    accepted: tuple[str, ...]
    refused: tuple[Refusal, ...] = ()
    reply: str = ""  # the server's answer to the message, often with its queue id

    @property
    def partial(self) -> bool:
        return bool(self.refused)

    def describe(self) -> str:
        words = f"sent to {', '.join(self.accepted)}"
        if self.reply:
            words += f" (the server said {self.reply})"
        if self.refused:
            words += "; " + "; ".join(str(r) for r in self.refused)
        return words


# On the wire between DATA and the final dot (RFC 5321 2.3.8, 4.5.2): CRLF line ends, and a dot
# that starts a line doubled. flatten() ends the message with CRLF.
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class _HandOverFailed(Exception):
    """What hand_over raised, carried past the translation of SMTP errors (as its __cause__)."""


def _timed_out(exc: BaseException) -> bool:
    # smtplib reports a read timeout as "Connection unexpectedly closed: timed out".
    return isinstance(exc.__context__, (TimeoutError, socket.timeout))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _temporary(code: int | None) -> bool:
    # No code (-1) means the connection went away: worth another try.
    return code is None or code < 500


def _reply(raw) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    return " ".join(text.split())


class SmtpConnection:
    """One SMTP session that can send several messages. Use as a context manager."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "SmtpConnection":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    # --- session ---------------------------------------------------------------------------------

    def open(self) -> None:
        s = self.settings
        try:
            addresses = reach.addresses_for(s)
            if s.security == "ssl":
                smtp = _SMTP_SSL(s.host, s.port, s.local_hostname, timeout=s.timeout, context=tls_context(s),
                                 addresses=addresses)
            else:
                smtp = _SMTP(s.host, s.port, s.local_hostname, timeout=s.timeout, addresses=addresses)
        except reach.RefusedServer as exc:
            raise self._error("connect", exc.message, False) from None
        except smtplib.SMTPConnectError as exc:
            if not 100 <= exc.smtp_code < 600:  # no reply code at all: not an SMTP server
                raise self._error("protocol", unlike_server(s, exc.smtp_error), False) from None
            raise self._error("connect", f"{s.address} refused the connection: {exc.smtp_code} "
                                         f"{_reply(exc.smtp_error)}", _temporary(exc.smtp_code), exc.smtp_code) from None
        except smtplib.SMTPServerDisconnected as exc:
            if _timed_out(exc):
                raise self._translated(exc.__context__, "connect") from None
            hint = " (does this port expect SSL/TLS? check the security setting)" if s.security != "ssl" else ""
            raise self._error("connect", f"{s.address} closed the connection without greeting{hint}", True) from None
        except Exception as exc:  # noqa: BLE001 - socket, TLS and timeout errors, translated
            raise self._translated(exc, "connect") from None
        self._smtp = smtp
        try:
            self._hello()
            if s.security == "starttls":
                self._starttls()
            if s.username:
                self._login()
        except BaseException:
            self.close()
            raise

    def _hello(self) -> None:
        try:
            code, reply = self._smtp.ehlo()
            if not 200 <= code < 300:
                code, reply = self._smtp.helo()
                if not 200 <= code < 300:
                    raise self._error("protocol", f"{self.settings.address} did not accept our greeting: "
                                                  f"{code} {_reply(reply)}", _temporary(code), code)
        except SmtpError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._from_smtp(exc, "greeting the server") from None

    def _starttls(self) -> None:
        s = self.settings
        if not self._smtp.has_extn("starttls"):
            raise self._error("tls", f"{s.address} does not offer STARTTLS; choose SSL/TLS or no encryption "
                                     "for this server", False)
        try:
            code, reply = self._smtp.starttls(context=tls_context(s))
        except smtplib.SMTPResponseException as exc:
            raise self._error("tls", f"{s.address} refused STARTTLS: {exc.smtp_code} {_reply(exc.smtp_error)}",
                              _temporary(exc.smtp_code), exc.smtp_code) from None
        except Exception as exc:  # noqa: BLE001
            raise self._from_smtp(exc, "tls") from None
        self._hello()

    def _login(self) -> None:
        s = self.settings
        if not self._smtp.has_extn("auth"):
            hint = (" on an unencrypted connection; most servers offer it only after STARTTLS"
                    if s.security == "none" else "")
            raise self._error("auth", f"{s.address} does not offer a login (AUTH){hint}", False)
        offered = self._smtp.esmtp_features.get("auth", "").upper().split()
        if s.token:
            return self._token_login(offered)
        if "PLAIN" not in offered and "LOGIN" not in offered:
            raise self._error("auth", f"{s.address} offers no password login we support "
                                      f"(it offers: {' '.join(offered) or 'none'})", False)
        try:
            code, reply = self._password_login(offered)
        except Exception as exc:  # noqa: BLE001
            raise self._from_smtp(exc, "login") from None
        if code != 235:
            raise self._error("auth", f"authentication failed for {s.username}: the server said "
                                      f"{code} {_reply(reply)}", _temporary(code), code)

    def _token_login(self, offered: list[str]) -> None:
        s = self.settings
        mechanism = sasl.choose_mechanism(offered)
        if mechanism is None:
            raise self._error("auth", sasl.missing_mechanism(s.address, "smtp")
                              + f" (it offers: {' '.join(offered) or 'none'})", False)
        challenges: list[bytes] = []

        def respond(challenge: bytes | None = None) -> str:
            # smtplib calls this first without a challenge (the initial response), then with the
            # server's JSON error, which is answered with an empty line.
            if challenge is None:
                return sasl.initial_response(mechanism, s.username, s.token).decode("utf-8")
            challenges.append(challenge)
            return ""

        try:
            self._smtp.auth(mechanism, respond, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            words = sasl.challenge_words(challenges[-1] if challenges else None)
            said = f"{exc.smtp_code} {_reply(exc.smtp_error)}" + (f" ({words})" if words else "")
            message = sasl.smtp_auth_disabled(s.address, s.username, said) or sasl.refused_token(s.username, said)
            raise self._error("auth", message, _temporary(exc.smtp_code), exc.smtp_code) from None
        except Exception as exc:  # noqa: BLE001
            raise self._from_smtp(exc, "login") from None

    def _password_login(self, offered: list[str]) -> tuple[int, bytes]:
        # Not smtplib.login(): it encodes the password as ASCII, and passwords may be any text
        # (RFC 4616: UTF-8).
        user = (self.settings.username or "").encode("utf-8")
        password = (self.settings.password or "").encode("utf-8")
        if "PLAIN" in offered:
            return self._smtp.docmd("AUTH", "PLAIN " + _b64(b"\0" + user + b"\0" + password))
        code, reply = self._smtp.docmd("AUTH", "LOGIN " + _b64(user))
        if code == 334:
            code, reply = self._smtp.docmd(_b64(password))
        return code, reply

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except Exception:  # noqa: BLE001 - the server may already be gone; nothing to tell
            try:
                smtp.close()
            except Exception:  # noqa: BLE001
                pass

    # --- sending ---------------------------------------------------------------------------------

    def send(self, message: EmailMessage | Message, *, envelope_from: str | None = None,
             recipients: Iterable[str] | None = None, hand_over: Callable[[], None] | None = None) -> SendResult:
        """hand_over, when given, is called once the server holds the whole message but before the
        final dot that makes it take the message: from then on a crash leaves it unknown whether the
        message arrived, and what hand_over records can say so. If it raises, the message is dropped
        (the connection closed without the dot) and its error goes up unchanged."""
        if self._smtp is None:
            self.open()
        data = flatten(message)
        sender = envelope_from or self.settings.from_address or _from_address(message)
        if not sender:
            raise SmtpError("sender", "the message has no sender address (From) and none is configured", False)
        targets = list(dict.fromkeys(recipients if recipients is not None else _recipients(message)))
        if not targets:
            raise SmtpError("recipient", "the message has no recipients", False)
        smtp = self._smtp
        try:
            options = []
            if smtp.does_esmtp and smtp.has_extn("size"):
                options.append(f"SIZE={len(data)}")
            if smtp.does_esmtp and smtp.has_extn("8bitmime") and not data.isascii():
                options.append("BODY=8BITMIME")
            code, reply = smtp.mail(sender, options)
            if code != 250:
                self._abort(code)
                raise self._error("sender", f"the server refused the sender address {sender}: {code} "
                                            f"{_reply(reply)}", _temporary(code), code)
            refused = []
            for address in targets:
                code, reply = smtp.rcpt(address)
                if code not in (250, 251):
                    refused.append(Refusal(address, code, _reply(reply)))
                    if code == 421:  # the server is closing the session
                        break
            if len(refused) == len(targets) or (refused and refused[-1].code == 421):
                self._abort(refused[-1].code)
                raise self._refused(refused)
            faults.reached("mid-send")  # the envelope given, the message not yet
            code, reply = self._data(data, hand_over)
            if code != 250:
                self._abort(code)
                raise self._error("message", f"the server refused the message: {code} {_reply(reply)}",
                                  _temporary(code), code)
            faults.reached("after-send")  # the server has it; we have not recorded that yet
        except SmtpError:
            raise
        except _HandOverFailed as failed:
            self.close()  # a message without its final dot is dropped by the server
            raise failed.__cause__ from None
        except smtplib.SMTPDataError as exc:  # DATA itself was refused
            self._abort(exc.smtp_code)
            raise self._error("message", f"the server refused the message: {exc.smtp_code} "
                                         f"{_reply(exc.smtp_error)}", _temporary(exc.smtp_code), exc.smtp_code) from None
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise self._from_smtp(exc, "sending the message") from None
        accepted = tuple(a for a in targets if a not in {r.address for r in refused})
        message_id = message.get("Message-ID")
        return SendResult(str(message_id).strip() if message_id else None, sender, accepted, tuple(refused),
                          f"{code} {_reply(reply)}".strip())

    def _data(self, data: bytes, hand_over: Callable[[], None] | None) -> tuple[int, bytes]:
        """smtplib's data(), with a pause before the final dot for hand_over."""
        smtp = self._smtp
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        body = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", data))
        if hand_over is None:
            smtp.send(body + b".\r\n")
            return smtp.getreply()
        # The dot goes out alone after the message: unless sent at once, Nagle's algorithm holds
        # it back until the server acknowledges the message (up to its delayed ACK, 40 ms).
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.send(body)
        try:
            hand_over()
        except Exception as exc:
            raise _HandOverFailed() from exc
        smtp.send(b".\r\n")
        return smtp.getreply()

    def _abort(self, code: int | None) -> None:
        """After a refusal: reset the transaction so the session can go on, or drop it."""
        if code == 421 or code is None or code < 0:
            self.close()
            return
        try:
            self._smtp.rset()
        except Exception:  # noqa: BLE001
            self.close()

    def _refused(self, refused: list[Refusal]) -> SmtpError:
        if len(refused) == 1:
            words = str(refused[0])
        else:
            words = "the server refused every recipient: " + "; ".join(
                f"{r.address} ({r.code} {r.reply})" for r in refused)
        return self._error("recipient", words, all(r.temporary for r in refused), refused[0].code, refused)

    # --- errors ----------------------------------------------------------------------------------

    def _error(self, kind: str, message: str, temporary: bool, code: int | None = None,
               refusals: Sequence[Refusal] = ()) -> SmtpError:
        error = SmtpError(kind, scrub(message, self.settings), temporary, code, refusals)
        log.info("%s: %s %s", self.settings.address, kind, error.message)
        return error

    def _translated(self, exc: BaseException, stage: str) -> SmtpError:
        error = translate(exc, self.settings, stage)
        kind = error.kind if error.kind in SMTP_KINDS else "protocol"
        return self._error(kind, error.message, error.transient)

    def _from_smtp(self, exc: BaseException, stage: str) -> SmtpError:
        s = self.settings
        doing = {"tls": "starting TLS", "login": "logging in"}.get(stage, stage)
        if isinstance(exc, smtplib.SMTPServerDisconnected) and _timed_out(exc):
            return self._translated(exc.__context__, stage)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return self._error("connect", f"the connection to {s.address} was lost while {doing}", True)
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._error("protocol", f"{s.address} refused {doing}: {exc.smtp_code} {_reply(exc.smtp_error)}",
                               _temporary(exc.smtp_code), exc.smtp_code)
        if isinstance(exc, smtplib.SMTPException) and not isinstance(exc, OSError):
            return self._error("protocol", f"{s.address}: {exc}", False)
        return self._translated(exc, stage)


class _Pinned(smtplib.SMTP):
    """Connects to the checked addresses when given; `_host` stays the name TLS verifies."""

    _addresses: list[str] | None = None

    def _get_socket(self, host, port, timeout):
        if self._addresses is None:
            return super()._get_socket(host, port, timeout)
        return reach.connect(self._addresses, port, timeout)


class _SMTP(_Pinned):
    def __init__(self, host, port, local_hostname, *, timeout, addresses):
        self._addresses = addresses
        super().__init__(host, port, local_hostname, timeout=timeout)


class _SMTP_SSL(smtplib.SMTP_SSL, _Pinned):  # noqa: N801 - after smtplib's name
    # SMTP_SSL wraps what _Pinned connects with the host name (next in line after SMTP_SSL).
    def __init__(self, host, port, local_hostname, *, timeout, context, addresses):
        self._addresses = addresses
        super().__init__(host, port, local_hostname, timeout=timeout, context=context)


# --- module functions --------------------------------------------------------------------------


def send(settings: SmtpSettings, message: EmailMessage | Message, *, envelope_from: str | None = None,
         recipients: Iterable[str] | None = None, hand_over: Callable[[], None] | None = None) -> SendResult:
    """Connect, send one message, disconnect. Raises SmtpError (see SmtpConnection.send for hand_over)."""
    with SmtpConnection(settings) as connection:
        return connection.send(message, envelope_from=envelope_from, recipients=recipients, hand_over=hand_over)


def send_many(settings: SmtpSettings, messages: Iterable[EmailMessage | Message]) -> list[SendResult | SmtpError]:
    """Send several messages over one connection (reconnecting after a lost one).

    Returns one SendResult or SmtpError per message, in order; never raises SmtpError.
    """
    results: list[SendResult | SmtpError] = []
    connection = SmtpConnection(settings)
    fatal: SmtpError | None = None
    try:
        for message in messages:
            if fatal is not None:
                results.append(fatal)  # a wrong password or certificate stays wrong
                continue
            try:
                results.append(connection.send(message))
            except SmtpError as error:
                results.append(error)
                if error.kind in ("auth", "tls"):
                    fatal = error
    finally:
        connection.close()
    return results


def check_connection(settings: SmtpSettings) -> str:
    """Connect, start TLS and log in as configured, send nothing. Returns plain words; raises SmtpError."""
    with SmtpConnection(settings):
        pass
    login = f" and logged in as {settings.username}" if settings.username else ""
    return f"connected to {settings.address} ({settings.security}){login}"


def flatten(message: EmailMessage | Message) -> bytes:
    """The bytes that go on the wire: CRLF line ends, no Bcc header."""
    if message.get_all("Bcc"):
        message = copy.deepcopy(message)
        del message["Bcc"]
    policy = message.policy.clone(linesep="\r\n")
    data = message.as_bytes(policy=policy)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _from_address(message: Message) -> str | None:
    for name in ("Sender", "From"):
        value = message.get(name)
        if value:
            pairs = getaddresses([str(value)])
            if pairs and pairs[0][1]:
                return pairs[0][1]
    return None


def _recipients(message: EmailMessage | Message) -> list[str]:
    """Envelope recipients: To, Cc and Bcc addresses."""
    found: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for header in message.get_all(name, []):
            if hasattr(header, "addresses"):
                specs = [a.addr_spec for a in header.addresses]
            else:  # a message built with the compat32 policy
                specs = [spec for _, spec in getaddresses([str(header)])]
            for spec in specs:
                if spec and spec not in found:
                    found.append(spec)
    return found

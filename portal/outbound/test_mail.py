"""Test emails ("send test email" on a template, on a mailbox and its outgoing server, on the
default gateway): the one
place they are sent. Every test email
- is limited to PER_USER_PER_MINUTE for the person and PER_MSP_PER_HOUR for their MSP, counted
  in Redis so that every web worker shares the count (an MSP admin must not be able to use the
  installation's gateway to send mail of their choosing in bulk);
- honours the staging switches: "block outgoing" sends nothing, "override recipient" sends to
  the override address instead;
- is recorded in the audit history of the record it was sent for, sent or not.
Flush, never commit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from flask import current_app
from redis.exceptions import RedisError

from portal.jobs import app_redis
from portal.mail.compose import AddressError, parse_address
from portal.models import Mailbox, SmtpServer, User
from portal.outbound.servers import (SendEnvironment, gateway_name, installation_gateway, msp_gateway,
                                    outgoing_server, outgoing_settings, own_server, record_server_test, smtp_settings)
from portal.outbound.settings import get_setting
from portal.services import audit
from portal.services.mailboxes import record_secret_test
from portal.transport import graph
from portal.transport.base import TransportError
from portal.transport.smtp import SmtpError, SmtpSettings
from portal.transport.smtp import send as smtp_send

PER_USER_PER_MINUTE = 3
PER_MSP_PER_HOUR = 10


def _take(connection, key: str, limit: int, window: int) -> bool:
    """One more in a sliding window of `window` seconds, unless `limit` are already in it."""
    now, member = time.time(), uuid.uuid4().hex
    pipe = connection.pipeline(transaction=True)
    pipe.zremrangebyscore(key, 0, now - window)
    pipe.zadd(key, {member: now})
    pipe.zcard(key)
    pipe.expire(key, window)
    count = pipe.execute()[2]
    if count > limit:
        connection.zrem(key, member)
        return False
    return True


def _give_back(connection, key: str) -> None:
    newest = connection.zrange(key, -1, -1)
    if newest:
        connection.zrem(key, newest[0])


def _limit_problem(actor: User, msp_id: int) -> str | None:
    prefix = f"{current_app.config['TIDEMARK_QUEUE']}:test-mail"
    user_key, msp_key = f"{prefix}:user:{actor.id}", f"{prefix}:msp:{msp_id}"
    try:
        connection = app_redis()
        if not _take(connection, user_key, PER_USER_PER_MINUTE, 60):
            return (f"Not sent: you have sent {PER_USER_PER_MINUTE} test emails in the last minute, the most "
                    "allowed. Wait a minute and try again.")
        if not _take(connection, msp_key, PER_MSP_PER_HOUR, 3600):
            _give_back(connection, user_key)
            return (f"Not sent: your MSP has sent {PER_MSP_PER_HOUR} test emails in the last hour, the most "
                    "allowed. Try again later.")
    except RedisError:
        return "Not sent: test emails cannot be counted right now (the job queue's Redis is not reachable)."
    return None


def send_test_mail(actor: User, msp_id: int, record: tuple[str, int], recipient: str,
                   build: Callable[[str], EmailMessage], settings: SmtpSettings | graph.GraphSettings, via: str, *,
                   send: Callable | None = None) -> str:
    """Send the email `build(address)` makes through `settings`; returns what happened in plain
    words. `record` is the (type, id) whose history notes the attempt; `via` names the server."""
    try:
        address = parse_address(recipient.strip()).addr_spec
    except AddressError as exc:
        return f"Not sent: {exc}."
    result = _send(actor, msp_id, address, build, settings, via, send or smtp_send)
    audit.record(actor, msp_id, record[0], record[1],
                 "test email sent" if result.startswith("Sent") else "test email not sent",
                 {"recipient": [None, address], "result": [None, result]})
    return result


def _send(actor, msp_id, address, build, settings, via, send) -> str:
    if get_setting("block_outgoing", msp_id):
        return "Not sent: outgoing mail is switched off (staging), so test emails are too."
    if problem := _limit_problem(actor, msp_id):
        return problem
    override = get_setting("override_recipient", msp_id)
    try:
        send(settings, build(override or address))
    except TransportError as exc:
        return f"Not sent: {exc.message}"
    if override:
        return f"Sent to {override} instead of {address} (recipients are overridden: staging) through {via}."
    return f"Sent to {address} through {via}."


def send_mailbox_test(mailbox: Mailbox, recipient: str, env: SendEnvironment, actor, *, send=None) -> str:
    """"Send test email" for a mailbox: a short mail, now, through the server its mail would
    use and from the address its mail would carry. Returns what happened in plain words."""
    if mailbox.sends_itself and mailbox.protocol == "graph" and own_server(mailbox) is None:
        return _graph_test(mailbox, recipient, env, actor, send=send)
    server = outgoing_server(mailbox)
    if server is None:
        if not mailbox.sends_itself:
            return ("Not sent: this mailbox is incoming only, so its mail goes through the default gateway, "
                    "and there is none.")
        return "Not sent: this mailbox has no outgoing server and there is no default gateway."
    try:
        settings = smtp_settings(server, env)
    except SmtpError as exc:  # the mailbox's grant gave no access token
        return f"Not sent: {exc.message}"

    def build(address: str) -> EmailMessage:
        return _mailbox_test_email(mailbox, address, env, f"{server.host}:{server.port}")

    which = "its own outgoing server" if server.mailbox_id == mailbox.id else gateway_name(server)
    attempt = _Attempt(send or smtp_send)
    result = send_test_mail(actor, mailbox.msp_id, ("mailbox", mailbox.id), recipient, build, settings,
                            f"{server.host} ({which})", send=attempt)
    return attempt.kept_on(server, result)


class _Attempt:
    """The send of a test email, noting whether it reached the server: one that did (sent, or
    refused by the server) is the server's last test; one held back before it (the limits,
    staging, a wrong address) says nothing of the server."""

    def __init__(self, send: Callable):
        self.send, self.tried = send, False

    def __call__(self, settings, email):
        self.tried = True
        return self.send(settings, email)

    def kept_on(self, server: SmtpServer, result: str) -> str:
        if self.tried:
            record_server_test(server, result.startswith("Sent"), result)
        return result


def _mailbox_test_email(mailbox: Mailbox, address: str, env: SendEnvironment, through: str) -> EmailMessage:
    return _test_email(mailbox.from_addresses[0], address, env, mailbox.address,
                       f"{through} for the mailbox {mailbox.address}")


def _test_email(sender: str, address: str, env: SendEnvironment, about: str, through: str) -> EmailMessage:
    """The short test mail: `about` names what is tried (the subject), `through` how it was sent."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = address
    email["Subject"] = f"Tidemark test email for {about}"
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = make_msgid(domain=env.host)
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(f"This is a test email from Tidemark, sent through {through}. Nothing needs to be done.\n")
    return email


def _graph_test(mailbox: Mailbox, recipient: str, env: SendEnvironment, actor, *, send=None) -> str:
    """The test email of a Graph mailbox without an SMTP server of its own: through sendMail, as its mail goes."""
    try:
        settings = outgoing_settings(mailbox, env)
    except TransportError as exc:  # no token: the grant's words
        return f"Not sent: {exc.message}"

    def build(address: str) -> EmailMessage:
        return _mailbox_test_email(mailbox, address, env, f"Microsoft Graph as {settings.mailbox}")

    return send_test_mail(actor, mailbox.msp_id, ("mailbox", mailbox.id), recipient, build, settings,
                          f"Microsoft Graph as {settings.mailbox}", send=send or graph.send)


def send_outgoing_test(mailbox: Mailbox, recipient: str, env: SendEnvironment, *, actor: User | None,
                       send=None) -> str:
    """"Send test email" (send_mailbox_test), in the mailbox's history when it used a saved
    password or the mailbox's grant."""
    used = []

    def sending(settings, email):
        used.append(settings)
        chosen = send or (graph.send if isinstance(settings, graph.GraphSettings) else smtp_send)
        return chosen(settings, email)

    result = send_mailbox_test(mailbox, recipient, env, actor, send=sending)
    if used and (getattr(used[0], "password", None) or getattr(used[0], "token", None)):
        record_secret_test(actor, mailbox, "test email", used[0].address, result,
                           secret="OAuth2 grant" if getattr(used[0], "token", None) else "saved password")
    return result


def send_gateway_test(recipient: str, env: SendEnvironment, actor: User, *, send=None, own: bool = False) -> str:
    """"Send test email" on the mail settings: through the saved gateway (`own`: the actor's MSP's
    own, else the installation's), from its From address, noted in the history of those settings
    (as saving them is)."""
    server = msp_gateway(actor.msp_id) if own else installation_gateway()
    which = "your MSP's gateway" if own else "the default gateway"
    if server is None:
        return f"Not sent: there is no {which.removeprefix('the ')} yet. Save its host first."
    settings = smtp_settings(server, env)
    via = f"{server.host} ({which})"

    def build(address: str) -> EmailMessage:
        return _test_email(server.from_address or f"tidemark@{env.host}", address, env, which,
                           f"{server.host}:{server.port}, {which}")

    attempt = _Attempt(send or smtp_send)
    record = ("client", actor.msp_id) if own else ("installation", 0)
    return attempt.kept_on(server, send_test_mail(actor, actor.msp_id, record, recipient, build,
                                                  settings, via, send=attempt))

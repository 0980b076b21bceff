"""Test emails ("send test email" on a template, on a mailbox and its outgoing server): the one
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

from flask import current_app
from redis.exceptions import RedisError

from portal.mail.compose import AddressError, parse_address
from portal.models import User
from portal.services import audit, outbound
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
    from portal.jobs import redis_connection  # noqa: PLC0415

    prefix = f"{current_app.config['TIDEMARK_QUEUE']}:test-mail"
    user_key, msp_key = f"{prefix}:user:{actor.id}", f"{prefix}:msp:{msp_id}"
    try:
        connection = redis_connection()
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
                   build: Callable[[str], EmailMessage], settings: SmtpSettings, via: str, *,
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
    if outbound.get_setting("block_outgoing"):
        return "Not sent: outgoing mail is switched off for this installation (staging), so test emails are too."
    if problem := _limit_problem(actor, msp_id):
        return problem
    override = outbound.get_setting("override_recipient")
    try:
        send(settings, build(override or address))
    except SmtpError as exc:
        return f"Not sent: {exc.message}"
    if override:
        return f"Sent to {override} instead of {address} (recipients are overridden on this installation) through {via}."
    return f"Sent to {address} through {via}."

"""When a mailbox is fetched, and how its fetching is doing: the schedule (poll interval, skip
windows), the lock a fetch holds, stalled mailboxes, and the health a poll leaves on the
mailbox (failure streaks, cool-off, one alert per streak to its alert recipients).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

from portal.extensions import db
from portal.jobs import app_redis, held
from portal.models import GraphSubscription, Mailbox, MailboxAlert
from portal.services.mailbox_alerts import alert


def in_skip_window(mailbox: Mailbox, now: datetime) -> str | None:
    minute = now.hour * 60 + now.minute
    for window in mailbox.skip_windows or []:
        start, _, end = window.partition("-")
        a = int(start[:2]) * 60 + int(start[3:5])
        b = int(end[:2]) * 60 + int(end[3:5])
        inside = a <= minute < b if a <= b else (minute >= a or minute < b)  # windows may span midnight
        if inside:
            return window
    return None


def due_mailboxes(now: datetime) -> list[Mailbox]:
    """Active mailboxes whose poll is due; an "outgoing only" mailbox is never fetched. One that
    an IDLE watcher holds, or a Graph one whose folders are all subscribed to (push), is polled
    only at its safety interval."""
    candidates = db.session.scalars(select(Mailbox).where(Mailbox.status == "active",
                                                          Mailbox.direction != "outgoing"))
    due = [m for m in candidates if (m.next_poll_at is None or m.next_poll_at <= now) and not in_skip_window(m, now)]
    pushed = pushed_ids([m.id for m in due if m.protocol == "imap"]) | graph_pushed_ids(due, now)
    return [m for m in due if m.id not in pushed or _safety_poll_due(m, now)]


# --- push (portal.inbound.push, workers.watcher): the state a watcher keeps per mailbox in Redis --

PUSH_STATE_PREFIX = "tidemark:push:state:"
# While a mailbox is pushed, the scheduler still polls it this often (or at its own interval,
# when that is longer): mail the server did not tell of (another folder, a lost notice) is late,
# never lost.
SAFETY_POLL_SECONDS = 15 * 60


def safety_interval(mailbox: Mailbox) -> int:
    return max(mailbox.poll_interval, SAFETY_POLL_SECONDS)


def _safety_poll_due(mailbox: Mailbox, now: datetime) -> bool:
    return mailbox.last_poll_at is None or now - mailbox.last_poll_at >= timedelta(seconds=safety_interval(mailbox))


def pushed_ids(mailbox_ids: list[int], connection: Redis | None = None) -> set[int]:
    """Which of these mailboxes a watcher holds in IDLE now. When Redis does not answer, none
    (the scheduler then polls them all at their own intervals)."""
    if not mailbox_ids:
        return set()
    try:
        found = (connection or app_redis(quick=True)).mget([PUSH_STATE_PREFIX + str(i) for i in mailbox_ids])
    except (RedisError, OSError):
        return set()
    return {i for i, raw in zip(mailbox_ids, found) if raw and json.loads(raw)["mode"] == "push"}


def graph_pushed_ids(mailboxes: Iterable[Mailbox], now: datetime) -> set[int]:
    """The Graph mailboxes among these whose every folder has a live change-notification
    subscription (portal.inbound.graph_push)."""
    graph = {m.id: m for m in mailboxes if m.protocol == "graph"}
    if not graph:
        return set()
    live: dict[int, set[str]] = {}
    rows = db.session.execute(select(GraphSubscription.mailbox_id, GraphSubscription.folder).where(
        GraphSubscription.mailbox_id.in_(graph), GraphSubscription.subscription_id.is_not(None),
        GraphSubscription.expires_at > now))
    for mailbox_id, folder in rows:
        live.setdefault(mailbox_id, set()).add(folder)
    return {i for i, m in graph.items() if i in live and set(m.folders or ["inbox"]) <= live[i]}


def fetch_lock(mailbox_id: int) -> str:
    """The name of the lock a fetch of this mailbox holds, and of its job (portal.jobs)."""
    return f"fetch-mailbox-{mailbox_id}"


# A finished fetch leaves no job behind (result_ttl 0), so the next one can use the same id;
# a failed one is kept briefly for inspection, not for RQ's default of a year, and replaced by
# the next poll (portal.jobs.dispatch_pending), as is one whose worker died. A slow server's
# fetch may run for an hour, whether the schedule or a person asked for it.
FETCH_OPTIONS = {"unique": True, "result_ttl": 0, "failure_ttl": 300, "job_timeout": 3600}


def fetch_options(mailbox_id: int, job_id: str | None = None) -> dict:
    """RQ's options for a fetch job. The scheduled fetch's id is also the name of the lock it
    holds: portal.jobs tells a dead job by it."""
    return {**FETCH_OPTIONS, "job_id": job_id or fetch_lock(mailbox_id)}


def stalled_ids(mailboxes: Iterable[Mailbox], now: datetime) -> set[int]:
    """The stalled ones among these mailboxes: overdue, and no fetch of theirs is under way (a
    first import of a big mailbox outlasts several poll intervals; the lock its heartbeat
    renews says it lives)."""
    late = [m for m in mailboxes if overdue(m, now)]
    # A pushed mailbox is fetched when mail comes, and polled only at its safety interval.
    pushed = pushed_ids([m.id for m in late if m.protocol == "imap"]) | graph_pushed_ids(late, now)
    late_ids = [m.id for m in late if m.id not in pushed or overdue(m, now, safety_interval(m))]
    busy = held([fetch_lock(i) for i in late_ids]) if late_ids else set()
    return {i for i in late_ids if fetch_lock(i) not in busy}


def overdue(mailbox: Mailbox, now: datetime, interval: int | None = None) -> bool:
    """An active mailbox whose due poll has not completed for two more poll intervals and two
    minutes (so three intervals without a completed poll, or a cool-off and two): the worker
    or the scheduler is stopped, or fetching hangs. Not while a skip window holds polls back."""
    if mailbox.status != "active" or not mailbox.fetches or mailbox.next_poll_at is None:
        return False
    interval = interval or mailbox.poll_interval
    grace = timedelta(seconds=2 * interval + 120)
    since = mailbox.next_poll_at
    if interval != mailbox.poll_interval and mailbox.last_poll_at is not None:
        since = max(since, mailbox.last_poll_at + timedelta(seconds=interval))
    if now - since <= grace:
        return False
    return not (in_skip_window(mailbox, now) or in_skip_window(mailbox, now - grace))


def stopped_in_words(exc: Exception) -> str:
    """A fetch stopped by an error other than the mail server's, for the mailbox's health: what
    happened in plain words, with the first line of the driver's own message (never the SQL,
    its parameters or a connection URL's password)."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = re.sub(r"://[^/@\s]*@", "://…@", detail[0] if detail else type(exc).__name__)[:300].rstrip(". ")
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError)):
        return f"The database could not be reached: {detail}. Fetching resumes by itself at the next poll."
    if isinstance(exc, SQLAlchemyError):
        return f"The database refused to store the fetched mail: {detail}. It is tried again at the next poll."
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"Redis, the job queue, could not be reached: {detail}. Fetching resumes by itself at the next poll."
    return (f"The fetch stopped on an unexpected error ({type(exc).__name__}: {detail}). "
            "It is tried again at the next poll.")


def record_success(mailbox: Mailbox, now: datetime) -> MailboxAlert | None:
    recovered = None
    if mailbox.failure_count and mailbox.streak_alerted:
        recovered = _alert(mailbox, "mailbox_recovered",
                           f"{mailbox.address} is fetching again after {mailbox.failure_count} failed polls.")
    mailbox.last_poll_at = mailbox.last_success_at = now
    mailbox.failure_count = 0
    mailbox.failing_since = None
    mailbox.last_error = None
    mailbox.streak_alerted = False
    mailbox.next_poll_at = now + timedelta(seconds=mailbox.poll_interval)
    return recovered


def record_failure(mailbox: Mailbox, message: str, now: datetime, *, transient: bool = True) -> MailboxAlert | None:
    """Count a failed poll. After max_tries failures in a row the mailbox cools off and its
    alert recipients hear of it, once per streak; not a second time for an OAuth2 grant that
    needs reconnecting, which alerts of its own."""
    mailbox.last_poll_at = now
    mailbox.failure_count += 1
    mailbox.failing_since = mailbox.failing_since or now
    mailbox.last_error = message
    failing = mailbox.failure_count >= mailbox.max_tries or not transient
    mailbox.next_poll_at = now + timedelta(seconds=mailbox.cool_off if failing else mailbox.poll_interval)
    if failing and not mailbox.streak_alerted:
        mailbox.streak_alerted = True
        if mailbox.auth == "oauth2" and mailbox.oauth is not None and mailbox.oauth.state == "reconnect needed":
            return None  # its "reconnect needed" alert told them, in the provider's words
        return _alert(mailbox, "mailbox_failing",
                      f"{mailbox.address} failed {mailbox.failure_count} time(s) in a row: {message}")
    return None


def _alert(mailbox: Mailbox, kind: str, message: str) -> MailboxAlert:
    return alert(mailbox, kind, message, {"failure_count": mailbox.failure_count})

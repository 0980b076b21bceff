"""Push for IMAP mailboxes: which ones an IDLE watcher (workers.watcher) may watch, who holds
each one, and what its page says ("push since 10:02", "polling: ..."). The scheduler's side (a
pushed mailbox is polled only at its safety interval) is in portal.inbound.health.

Everything shared between watchers lives in Redis, so that watchers on several machines split
the mailboxes between them:

- a lease per mailbox (SET NX PX, renewed by its holder): two watchers never watch the same
  mailbox, and the mailboxes of a watcher that died are taken over when their leases expire;
- the state of each watched mailbox, which expires with the lease: when no watcher renews it,
  the page says "polling: no watcher running" and the scheduler polls at the mailbox's own
  interval again, by itself;
- the live watchers (a sorted set of their last beats), so that each takes its share.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from portal.extensions import db
from portal.inbound.health import PUSH_STATE_PREFIX, fetch_options, in_skip_window
from portal.jobs import app_redis, enqueue_now
from portal.models import Mailbox

LEASE_PREFIX = "tidemark:push:lease:"
STATE_PREFIX = PUSH_STATE_PREFIX
WATCHERS = "tidemark:push:watchers"
# A watcher renews its leases, its states and its beat every third of this.
LEASE_SECONDS = 30
NO_IDLE = "the server does not offer IDLE"
NO_WATCHER = "no watcher running"
FETCH_AGAIN = "tidemark:push:fetch-again"  # mailboxes whose running fetch is to be followed by another


def not_watched(mailbox: Mailbox, now: datetime) -> str | None:
    """Why the watcher leaves this mailbox to polling, in words for its page; None: watch it."""
    if mailbox.status != "active":
        return f"the mailbox is {mailbox.status}"
    if not mailbox.fetches:
        return "the mailbox is outgoing only"
    if mailbox.protocol == "pop3":
        return "POP3 has no push"
    if mailbox.protocol != "imap":
        return "not an IMAP mailbox"
    window = in_skip_window(mailbox, now)
    if window:
        return f"inside the skip window {window}"
    if mailbox.streak_alerted and mailbox.next_poll_at is not None and mailbox.next_poll_at > now:
        return "cooling off after failed polls"
    return None


def watched_mailboxes(now: datetime) -> list[Mailbox]:
    """The mailboxes a watcher should hold an IDLE connection for, by id."""
    candidates = db.session.scalars(select(Mailbox).where(Mailbox.status == "active", Mailbox.protocol == "imap",
                                                          Mailbox.direction != "outgoing").order_by(Mailbox.id))
    return [m for m in candidates if not_watched(m, now) is None]


def connection_key(mailbox: Mailbox) -> tuple:
    """What the IDLE connection depends on: when it changes, the watcher connects again."""
    folder = (mailbox.folders or ["INBOX"])[0]
    return (mailbox.host, mailbox.port, mailbox.security, mailbox.username, mailbox.password_encrypted,
            mailbox.auth, mailbox.shared_mailbox, mailbox.verify_tls, mailbox.timeout, folder)


def ask_for_fetch(mailbox_id: int, connection: Redis | None = None) -> str:
    """The scheduled fetch of this mailbox, at once: the same job (and job id) the scheduler and
    its lock use, so there is one fetch per mailbox at a time. See portal.jobs.enqueue_now."""
    return enqueue_now("workers.fetch.fetch_mailbox", mailbox_id, options=fetch_options(mailbox_id),
                       connection=connection)


def ask_for_fetch_soon(mailbox_id: int) -> str:
    """ask_for_fetch for a process that cannot wait for a running fetch to end (a Graph
    notification): a fetch under way may have looked before the mail came, so the mailbox is
    noted in Redis and the scheduler asks again once it has ended (ask_again)."""
    connection = app_redis()
    outcome = ask_for_fetch(mailbox_id, connection)
    if outcome == "running":
        connection.sadd(FETCH_AGAIN, mailbox_id)
    return outcome


def ask_again(connection: Redis | None = None) -> int:
    """The fetches noted by ask_for_fetch_soon, asked for again where the running one has ended."""
    connection = connection or app_redis()
    asked = 0
    for member in connection.smembers(FETCH_AGAIN):
        mailbox_id = int(member)
        if ask_for_fetch(mailbox_id, connection) != "running":
            connection.srem(FETCH_AGAIN, member)
            asked += 1
    return asked


# --- the state of each watched mailbox -------------------------------------------------------------


def write_state(pipe, mailbox_id: int, mode: str, reason: str = "", since: float | None = None) -> None:
    """mode "push" or "polling" (with its reason), kept as long as the lease."""
    state = {"mode": mode, "reason": reason, "since": since or time.time()}
    pipe.set(STATE_PREFIX + str(mailbox_id), json.dumps(state), px=LEASE_SECONDS * 1000)


@dataclass(frozen=True)
class PushState:
    push: bool
    words: str  # "push" or "polling: <why>"
    since: datetime | None = None  # push: since when
    until: datetime | None = None  # Graph notifications: until when the subscription lasts


def push_states(mailboxes: list[Mailbox], now: datetime) -> dict[int, PushState]:
    """How each mailbox learns of new mail, for its page and the mailbox list."""
    states: dict[int, PushState] = graph_states([m for m in mailboxes if m.protocol == "graph"], now)
    mailboxes = [m for m in mailboxes if m.protocol != "graph"]
    watched = [m.id for m in mailboxes if not_watched(m, now) is None]
    found: list = []
    any_watcher = False
    try:
        connection = app_redis(quick=True)
        if watched:
            found = connection.mget([STATE_PREFIX + str(i) for i in watched])
        any_watcher = bool(connection.zcount(WATCHERS, time.time() - LEASE_SECONDS, "+inf"))
    except (RedisError, OSError):
        found = [None] * len(watched)
    kept = dict(zip(watched, found))
    for mailbox in mailboxes:
        if mailbox.id not in kept:
            states[mailbox.id] = PushState(False, f"polling: {not_watched(mailbox, now)}")
            continue
        raw = kept[mailbox.id]
        if raw is None:
            why = "waiting for the watcher to connect" if any_watcher else NO_WATCHER
            states[mailbox.id] = PushState(False, f"polling: {why}")
            continue
        state = json.loads(raw)
        if state["mode"] == "push":
            since = datetime.fromtimestamp(state["since"], timezone.utc)
            states[mailbox.id] = PushState(True, "push", since)
        else:
            states[mailbox.id] = PushState(False, f"polling: {state['reason']}")
    return states


def graph_states(mailboxes: list[Mailbox], now: datetime) -> dict[int, PushState]:
    """A Graph mailbox is pushed while every folder it reads has a live subscription
    (portal.inbound.graph_push); else polled, and why."""
    # graph_push imports this module (ask_for_fetch_soon): imported here, not at the top.
    from portal.inbound.graph_push import SUBSCRIBING, live_folders, not_subscribed  # noqa: PLC0415

    portal_url = current_app.config["TIDEMARK_PORTAL_URL"]
    live, problems = live_folders([m.id for m in mailboxes], now)
    states: dict[int, PushState] = {}
    for mailbox in mailboxes:
        why = not_subscribed(mailbox, portal_url)
        folders = list(dict.fromkeys(mailbox.folders or ["inbox"]))
        mine = live.get(mailbox.id, {})
        if why is None and all(f in mine for f in folders):
            states[mailbox.id] = PushState(True, "push", until=min(mine[f] for f in folders))
        elif why is None and mailbox.id in problems:
            states[mailbox.id] = PushState(False, f"polling: Microsoft Graph did not subscribe: {problems[mailbox.id]}")
        else:
            states[mailbox.id] = PushState(False, f"polling: {why or SUBSCRIBING}")
    return states

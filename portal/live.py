"""Live pages: what changed, told to the open pages within a second or two.

A commit that changed a ticket or one of its messages publishes, after the commit (never
before: a page must not fetch rows a rollback takes back), one Redis pub/sub message per ticket
and part ("conversation": a message came in, was written or its delivery changed; "fields": the
status, priority, assignee or type), and one per MSP for its ticket list. The pages hold one
server-sent-events stream per tab (portal/tickets/live.py), which only relays these names: the
page then fetches the changed part through the ordinary views, scoped to the signed-in MSP.

"Ana is replying": a sorted set per ticket, its members the users replying scored by when that
lapses (a few seconds after the last keystroke announced), trimmed by score when read, and
announced on the ticket's channel.

Streams run after the request's context is gone: they hold no database connection, only Redis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator

from flask import Flask, current_app, has_request_context, request
from redis.exceptions import RedisError
from sqlalchemy import event

from portal.extensions import db
from portal.jobs import app_redis
from portal.models import Message, Ticket

log = logging.getLogger(__name__)

_PENDING = "tidemark_live_pending"
CONVERSATION, FIELDS, LIST, PRESENCE = "conversation", "fields", "list", "presence"
# Sent by static/live.js with each request of a tab and with its stream: a tab is not told of
# its own changes, which its answer has drawn already (a second drawing would lose its messages).
TAB_HEADER = "X-Tidemark-Tab"
# A colleague's composer: shown for this long after the last keystroke announced.
TYPING_SECONDS = 8


def init_app(app: Flask) -> None:
    app.config.setdefault("TIDEMARK_LIVE_STREAM_SECONDS", 300)
    app.config.setdefault("TIDEMARK_LIVE_HEARTBEAT_SECONDS", 15)
    # A stream holds one of gunicorn's threads for its lifetime: at most half of a process's
    # threads stream, so the other half always answers ordinary requests. One MSP's desk and one
    # person (tabs) are capped too. A refused page falls back to its slower refresh (static/live.js).
    app.config.setdefault("TIDEMARK_LIVE_STREAMS_PER_PROCESS", max(1, app.config.get("TIDEMARK_WEB_THREADS", 16) // 2))
    app.config.setdefault("TIDEMARK_LIVE_STREAMS_PER_MSP", 40)
    app.config.setdefault("TIDEMARK_LIVE_STREAMS_PER_USER", 4)
    if event.contains(db.session, "after_commit", _after_commit):
        return  # every app of the process shares the one session factory
    event.listen(db.session, "before_flush", _before_flush)
    event.listen(db.session, "pending_to_persistent", _inserted)
    event.listen(db.session, "after_commit", _after_commit)
    event.listen(db.session, "after_soft_rollback", _after_rollback)


# --- what a transaction changed ---------------------------------------------------------------------


def _note(session, msp_id: int | None, ticket_id: int | None, part: str) -> None:
    if msp_id is not None and ticket_id is not None:
        session.info.setdefault(_PENDING, set()).add((msp_id, ticket_id, part))


def _before_flush(session, _context, _instances) -> None:
    for obj in session.dirty:
        if isinstance(obj, Ticket) and session.is_modified(obj):
            _note(session, obj.msp_id, obj.id, FIELDS)
        elif isinstance(obj, Message) and session.is_modified(obj):
            _note(session, obj.msp_id, obj.ticket_id, CONVERSATION)


def _inserted(session, obj) -> None:
    # Also told for the rows the inbound batch inserts itself (portal.inbound.write).
    if isinstance(obj, Ticket):
        _note(session, obj.msp_id, obj.id, FIELDS)
    elif isinstance(obj, Message):
        _note(session, obj.msp_id, obj.ticket_id, CONVERSATION)


def _after_rollback(session, previous_transaction) -> None:
    if not previous_transaction.nested:  # a savepoint's rollback leaves the rest to tell
        session.info.pop(_PENDING, None)


def _after_commit(session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        publish(pending, tab=request.headers.get(TAB_HEADER, "")[:40] if has_request_context() else "")


def publish(changes, *, tab: str = "") -> None:
    """Tell the open pages; a page that misses it catches up when its stream reopens. Redis
    being away or slow must not fail, nor hold, the work that was just committed.

    The list hears of a ticket's own changes only: what its rows show (status, priority,
    assignee, updated, new information) are the ticket's columns, and a message that arrives
    updates those too; a message's delivery changing alone leaves every row as it was."""
    try:
        pipe = app_redis(quick=True).pipeline(transaction=False)
        for msp_id in sorted({m for m, _t, p in changes if p == FIELDS}):
            pipe.publish(msp_channel(msp_id), json.dumps({"part": LIST, "tab": tab}))
        for _msp_id, ticket_id, part in changes:
            pipe.publish(ticket_channel(ticket_id), json.dumps({"part": part, "tab": tab}))
        pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("live pages not told of a change: %s", exc)


def _prefix() -> str:
    return f"{current_app.config['TIDEMARK_QUEUE']}:live"


def ticket_channel(ticket_id: int) -> str:
    return f"{_prefix()}:ticket:{ticket_id}"


def msp_channel(msp_id: int) -> str:
    return f"{_prefix()}:msp:{msp_id}"


# --- "Ana is replying" ------------------------------------------------------------------------------


def _typing_key(ticket_id: int) -> str:
    """Who is replying on this ticket: a sorted set of user ids scored by when it lapses, and
    beside it (key + ":names") a hash of their names."""
    return f"{_prefix()}:typing:{ticket_id}"


def typing(ticket_id: int, user_id: int, name: str, *, stopped: bool = False) -> None:
    """The user's composer on this ticket is open (refreshed while typing), or was closed. Only
    a courtesy to colleagues: Redis being away or slow is logged, never the request's failure."""
    key, names = _typing_key(ticket_id), _typing_key(ticket_id) + ":names"
    try:
        pipe = app_redis(quick=True).pipeline()
        if stopped:
            pipe.zrem(key, user_id)
            pipe.hdel(names, user_id)
        else:
            pipe.zadd(key, {user_id: time.time() + TYPING_SECONDS})
            pipe.hset(names, user_id, name)
            pipe.expire(key, TYPING_SECONDS + 1)
            pipe.expire(names, TYPING_SECONDS + 1)
        pipe.publish(ticket_channel(ticket_id), json.dumps(
            {"part": PRESENCE, "user": user_id, "name": name, "stopped": stopped}))
        pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("colleagues not told who is replying: %s", exc)


def who_is_typing(ticket_id: int, *, but: int) -> list[dict]:
    """Those replying on this ticket now, but the one asking; the lapsed are trimmed away."""
    key, now = _typing_key(ticket_id), time.time()
    try:
        pipe = app_redis(quick=True).pipeline()
        pipe.zremrangebyscore(key, 0, now)
        pipe.zrangebyscore(key, now, "+inf")
        ids = [int(i) for i in pipe.execute()[1] if int(i) != but]
        found = app_redis(quick=True).hmget(key + ":names", ids) if ids else []
    except (RedisError, OSError) as exc:
        log.warning("who is replying not known: %s", exc)
        return []
    return [{"part": PRESENCE, "user": i, "name": n.decode(), "stopped": False}
            for i, n in zip(ids, found, strict=True) if n]


# --- the stream -------------------------------------------------------------------------------------


class _ProcessSlots:
    """The streams open in this process (threads of one gunicorn worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def take(self, most: int) -> bool:
        with self._lock:
            if self.open >= most:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)


def _process_slots() -> _ProcessSlots:
    app = current_app._get_current_object()
    return app.extensions.setdefault("tidemark_live_slots", _ProcessSlots())


class Stream:
    """One page's stream: everything it needs is taken now, while the request's context lives;
    `events()` runs after it, with Redis only."""

    def __init__(self, channel: str, *, msp_id: int, user_id: int, tab: str = "", first: list[dict] = ()):
        cfg = current_app.config
        self.tab = tab
        self.redis, self.quick = app_redis(), app_redis(quick=True)
        self.channel = channel
        self.user_id = user_id
        self.first = list(first)
        self.lifetime = cfg["TIDEMARK_LIVE_STREAM_SECONDS"]
        self.heartbeat = cfg["TIDEMARK_LIVE_HEARTBEAT_SECONDS"]
        self.process_most = cfg["TIDEMARK_LIVE_STREAMS_PER_PROCESS"]
        # Each open stream is a member of a sorted set, scored by when it ends at the latest (a
        # stream whose process died counts until then): (key, most) for the person and the MSP.
        self.caps = ((f"{_prefix()}:streams:{user_id}", cfg["TIDEMARK_LIVE_STREAMS_PER_USER"]),
                     (f"{_prefix()}:streams:msp:{msp_id}", cfg["TIDEMARK_LIVE_STREAMS_PER_MSP"]))
        self.slots = _process_slots()
        self.me = uuid.uuid4().hex
        self._held = False

    def admit(self) -> bool:
        """Whether one more stream may open here, for this MSP and this person. An admitted
        stream holds its places until `release()`, which the response calls when it is closed
        (whether or not its events were ever read) and `events()` when it ends."""
        if not self.slots.take(self.process_most):
            return False
        now = time.time()
        until = now + self.lifetime + self.heartbeat + 5
        pipe = self.quick.pipeline()
        for key, _most in self.caps:
            pipe.zremrangebyscore(key, 0, now)
            pipe.zadd(key, {self.me: until})
            pipe.expire(key, int(until - now))
            pipe.zcard(key)
        try:
            counts = pipe.execute()[3::4]
        except (RedisError, OSError) as exc:
            log.warning("live stream refused, Redis did not answer: %s", exc)
            self.slots.give_back()
            return False  # the page refreshes itself instead
        self._held = True
        if all(n <= most for n, (_key, most) in zip(counts, self.caps, strict=True)):
            return True
        self.release()
        return False

    def release(self) -> None:
        """Give the places back; safe to call more than once."""
        if not self._held:
            return
        self._held = False
        self.slots.give_back()
        try:
            pipe = self.quick.pipeline(transaction=False)
            for key, _most in self.caps:
                pipe.zrem(key, self.me)
            pipe.execute()
        except (RedisError, OSError) as exc:  # the places lapse by their score
            log.warning("live stream places not given back: %s", exc)

    def events(self) -> Iterator[str]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            # The browser reconnects 2 s after the stream ends (its lifetime) or breaks.
            yield "retry: 2000\n\n"
            for item in self.first:
                yield _event(item)
            start = beat = time.monotonic()
            while (now := time.monotonic()) - start < self.lifetime:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    item = json.loads(message["data"])
                    if item.get("user") != self.user_id and not (self.tab and item.get("tab") == self.tab):
                        yield _event(item)
                        beat = now
                elif now - beat >= self.heartbeat:
                    # A comment line: proxies keep the stream open, and a closed tab is noticed here.
                    yield ": still here\n\n"
                    beat = now
            yield "event: end\ndata: lifetime\n\n"
        finally:
            pubsub.close()
            self.release()


def _event(item: dict) -> str:
    if item["part"] == PRESENCE:
        return f"event: presence\ndata: {json.dumps(item)}\n\n"
    return f"event: changed\ndata: {item['part']}\n\n"  # the page fetches that part again

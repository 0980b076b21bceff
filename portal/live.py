"""Live pages: what changed, told to the open pages within a second or two.

A commit that changed a ticket or one of its messages publishes, after the commit (never
before: a page must not fetch rows a rollback takes back), one Redis pub/sub message per ticket
and part ("conversation": a message came in, was written or its delivery changed; "fields": the
status, priority, assignee or type), and one per MSP for its ticket list. The pages hold one
server-sent-events stream per tab (portal/tickets/live.py), which only relays these names: the
page then fetches the changed part through the ordinary views, scoped to the signed-in MSP.

"Ana is replying": a Redis key per ticket and user with a short time to live, refreshed while
she types, and announced on the ticket's channel.

Streams run after the request's context is gone: they hold no database connection, only Redis.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator

from flask import Flask, current_app, has_request_context, request
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import event

from portal.extensions import db
from portal.jobs import redis_connection
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
    # One stream per tab; a person with more tabs than this open gets no more streams (those
    # pages fall back to their slow refresh), so one browser cannot hold every thread.
    app.config.setdefault("TIDEMARK_LIVE_STREAMS_PER_USER", 12)
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
    being away must not fail the work that was just committed."""
    try:
        redis = _redis()
        pipe = redis.pipeline(transaction=False)
        for msp_id in {m for m, _t, _p in changes}:
            tickets = sorted({t for m, t, _p in changes if m == msp_id})
            pipe.publish(msp_channel(msp_id), json.dumps({"part": LIST, "tickets": tickets, "tab": tab}))
        for _msp_id, ticket_id, part in changes:
            pipe.publish(ticket_channel(ticket_id), json.dumps({"part": part, "tab": tab}))
        pipe.execute()
    except RedisError as exc:
        log.warning("live pages not told of a change: %s", exc)


def _redis() -> Redis:
    app = current_app._get_current_object()
    found = app.extensions.get("tidemark_live_redis")
    if found is None:
        found = app.extensions["tidemark_live_redis"] = redis_connection()
    return found


def _prefix() -> str:
    return f"{current_app.config['TIDEMARK_QUEUE']}:live"


def ticket_channel(ticket_id: int) -> str:
    return f"{_prefix()}:ticket:{ticket_id}"


def msp_channel(msp_id: int) -> str:
    return f"{_prefix()}:msp:{msp_id}"


# --- "Ana is replying" ------------------------------------------------------------------------------


def _typing_key(ticket_id: int, user_id: int) -> str:
    return f"{_prefix()}:typing:{ticket_id}:{user_id}"


def typing(ticket_id: int, user_id: int, name: str, *, stopped: bool = False) -> None:
    """The user's composer on this ticket is open (refreshed while typing), or was closed."""
    redis = _redis()
    if stopped:
        redis.delete(_typing_key(ticket_id, user_id))
    else:
        redis.set(_typing_key(ticket_id, user_id), name, ex=TYPING_SECONDS)
    redis.publish(ticket_channel(ticket_id), json.dumps(
        {"part": PRESENCE, "user": user_id, "name": name, "stopped": stopped}))


def who_is_typing(ticket_id: int, *, but: int) -> list[dict]:
    redis = _redis()
    found = []
    for key in redis.scan_iter(match=_typing_key(ticket_id, 0)[:-1] + "*", count=100):
        user_id = int(key.rsplit(b":", 1)[1])
        name = redis.get(key)
        if user_id != but and name:
            found.append({"part": PRESENCE, "user": user_id, "name": name.decode(), "stopped": False})
    return found


# --- the stream -------------------------------------------------------------------------------------


class Stream:
    """One page's stream: everything it needs is taken now, while the request's context lives;
    `events()` runs after it, with Redis only."""

    def __init__(self, channel: str, *, user_id: int, tab: str = "", first: list[dict] = ()):
        cfg = current_app.config
        self.tab = tab
        self.redis = _redis()
        self.channel = channel
        self.user_id = user_id
        self.first = list(first)
        self.lifetime = cfg["TIDEMARK_LIVE_STREAM_SECONDS"]
        self.heartbeat = cfg["TIDEMARK_LIVE_HEARTBEAT_SECONDS"]
        self.most = cfg["TIDEMARK_LIVE_STREAMS_PER_USER"]
        self.open_key = f"{_prefix()}:streams:{user_id}"
        self.me = uuid.uuid4().hex

    def admit(self) -> bool:
        """Whether the user may open one more stream: each open one is a member of a sorted set,
        scored by when it ends at the latest (a stream whose process died counts until then)."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(self.open_key, 0, now)
        pipe.zadd(self.open_key, {self.me: now + self.lifetime + self.heartbeat + 5})
        pipe.expire(self.open_key, int(self.lifetime + self.heartbeat + 5))
        pipe.zcard(self.open_key)
        if pipe.execute()[-1] <= self.most:
            return True
        self.redis.zrem(self.open_key, self.me)
        return False

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
            self.redis.zrem(self.open_key, self.me)


def _event(item: dict) -> str:
    if item["part"] == PRESENCE:
        return f"event: presence\ndata: {json.dumps(item)}\n\n"
    return f"event: changed\ndata: {item['part']}\n\n"  # the page fetches that part again

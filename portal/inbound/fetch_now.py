"""One fetch of one mailbox now, asked for by a person (`flask mail fetch`): whatever its poll
interval and skip windows, under the lock the scheduled fetch takes, and what it decided,
message by message. An active mailbox only: a draft is not ready, a disabled one was stopped
on purpose."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo

from redis.exceptions import RedisError
from sqlalchemy import func, or_, select

from portal.extensions import db
from portal.inbound.fetch import FetchReport, run_fetch
from portal.inbound.health import fetch_lock, fetch_options
from portal.jobs import app_redis, enqueue, exclusive
from portal.models import Mailbox, Message, RawMessage
from portal.transport import open_session


log = logging.getLogger(__name__)


class FetchRefused(Exception):
    """The fetch did not start; the message says why, in plain words."""


@dataclass
class FetchedNow:
    report: FetchReport
    # Each message this fetch decided or tried to, in the order it came: (stored, its inbound
    # message; None when deciding it failed and it is tried again at the next fetch).
    decided: list[tuple[RawMessage, Message | None]] = field(default_factory=list)


def refuse_unless_active(mailbox: Mailbox) -> None:
    """A draft is not ready, a disabled mailbox was stopped on purpose and an outgoing-only one
    only sends: none is fetched."""
    if mailbox.status != "active":
        what = "a draft: activate it" if mailbox.status == "draft" else "disabled: enable it"
        raise FetchRefused(f"the mailbox {mailbox.address} is {what} on its page before fetching it")
    if not mailbox.fetches:
        raise FetchRefused(f"the mailbox {mailbox.address} is outgoing only: nothing is read from it. "
                           "Set its direction to incoming to fetch it")


def fetch_now(mailbox: Mailbox, *, keys: str, secret: bytes, commit: Callable[[], None], ca_file: str | None = None,
              host: str | None = None) -> FetchedNow:
    refuse_unless_active(mailbox)
    connection = app_redis()
    try:
        connection.ping()
    except (RedisError, OSError) as exc:
        log.warning("fetch of mailbox %s: Redis cannot be reached: %s", mailbox.id, exc)
        raise FetchRefused(f"Redis cannot be reached; it holds the lock that keeps two fetches of "
                           f"{mailbox.address} apart, so nothing was fetched") from None
    with exclusive(fetch_lock(mailbox.id), connection=connection) as mine:
        if not mine:
            raise FetchRefused(f"a fetch of {mailbox.address} is under way; try again when it is done")
        # What this run will decide: mail stored by an earlier run and still new, and all it stores.
        last_id = db.session.scalar(select(func.max(RawMessage.id))) or 0
        waiting = list(db.session.scalars(select(RawMessage.id).where(RawMessage.mailbox_id == mailbox.id,
                                                                      RawMessage.state == "new")))
        report = run_fetch(mailbox, open_session=open_session, keys=keys, secret=secret, commit=commit,
                           ca_file=ca_file, host=host, scheduled=False)
    stored = list(db.session.scalars(
        select(RawMessage).where(RawMessage.mailbox_id == mailbox.id,
                                 or_(RawMessage.state != "new", RawMessage.last_error.is_not(None)),
                                 or_(RawMessage.id > last_id, RawMessage.id.in_(waiting)))
        .order_by(RawMessage.id)))
    messages = {m.raw_message_id: m for m in db.session.scalars(
        select(Message).where(Message.raw_message_id.in_([s.id for s in stored]), Message.direction == "in"))}
    return FetchedNow(report, [(s, messages.get(s.id)) for s in stored])


# --- "Fetch now" from the portal: queued as a job, its outcome kept a while for the page to show --

ASKED_PREFIX = "tidemark:fetch-now:"
# Long enough for a slow server's fetch to be read when it ends; a page asks only while it waits.
ASKED_SECONDS = 3600
# One fetch per mailbox asked for in this many seconds: a second click is told when the first was.
AGAIN_PREFIX = "tidemark:fetch-now-asked:"
AGAIN_SECONDS = 30
# A fetch not started within this many seconds is waiting for a worker that may not run.
SLOW_SECONDS = 60
# The page stops asking after this many seconds; the outcome is kept for when it is opened again.
WAIT_SECONDS = 300


def ask_to_fetch(mailbox: Mailbox, tz: tzinfo = timezone.utc) -> None:
    """Queue one fetch of this mailbox now (after the commit); its page shows "waiting" until the
    job tells its outcome. The job takes the same lock as the scheduled fetch. Refused when one
    was asked for in the last AGAIN_SECONDS (told at what time, in `tz`)."""
    refuse_unless_active(mailbox)
    connection, now = app_redis(), time.time()
    try:
        if not connection.set(AGAIN_PREFIX + str(mailbox.id), now, nx=True, ex=AGAIN_SECONDS):
            asked = float(connection.get(AGAIN_PREFIX + str(mailbox.id)) or now)
            at = datetime.fromtimestamp(asked, tz).strftime("%H:%M")
            raise FetchRefused(f"already asked at {at}; {mailbox.address} is fetched at most once every "
                               f"{AGAIN_SECONDS} seconds")
        connection.set(ASKED_PREFIX + str(mailbox.id), json.dumps({"done": False, "asked": now}), ex=ASKED_SECONDS)
    except (RedisError, OSError) as exc:
        log.warning("fetch now of mailbox %s not queued: Redis cannot be reached: %s", mailbox.id, exc)
        raise FetchRefused("the job queue (Redis) cannot be reached, so the fetch could not be queued; "
                           "try again in a minute") from None
    enqueue("workers.fetch.fetch_mailbox_now", mailbox.id, options=fetch_options(mailbox.id, f"fetch-now-{mailbox.id}"))


def tell_outcome(mailbox_id: int, words: str, *, ok: bool) -> None:
    try:
        app_redis().set(ASKED_PREFIX + str(mailbox_id), json.dumps({"done": True, "ok": ok, "words": words}),
                        ex=ASKED_SECONDS)
    except (RedisError, OSError) as exc:
        # The page stops waiting after WAIT_SECONDS; the mailbox shows the fetch's result anyway.
        log.warning("the outcome of fetching mailbox %s was not kept for its page: %s", mailbox_id, exc)


def asked_state(mailbox_id: int) -> dict | None:
    """None: nothing asked lately; {"done": False}: waiting ("slow": no worker took it yet;
    "gave_up": the page stops asking); else its outcome, "ok" and "words"."""
    return asked_states([mailbox_id]).get(mailbox_id)


def _read(found: bytes) -> dict:
    state = json.loads(found)
    waited = time.time() - state.get("asked", time.time())
    state["slow"] = not state["done"] and waited > SLOW_SECONDS
    state["gave_up"] = not state["done"] and waited > WAIT_SECONDS
    return state


def asked_states(mailbox_ids: list[int]) -> dict[int, dict]:
    """`asked_state` of several mailboxes in one round trip, for a page that lists them."""
    if not mailbox_ids:
        return {}
    try:
        found = app_redis().mget([ASKED_PREFIX + str(i) for i in mailbox_ids])
    except (RedisError, OSError):
        return {}
    return {i: _read(v) for i, v in zip(mailbox_ids, found) if v}


def in_words(fetched: FetchedNow) -> tuple[str, bool]:
    """("fetched 3, 2 new tickets", True), or the server's error in plain words."""
    report = fetched.report
    if report.error:
        return report.error, False
    tickets = sum(1 for _, message in fetched.decided if message is not None and message.outcome == "created")
    words = f"fetched {report.fetched}, {tickets} new ticket{'' if tickets == 1 else 's'}"
    if report.failed:
        words += f"; {report.failed} could not be decided and will be tried again"
    return words, True

"""One fetch of one mailbox now, asked for by a person (`flask mail fetch`): whatever its poll
interval and skip windows, under the lock the scheduled fetch takes, and what it decided,
message by message. An active mailbox only: a draft is not ready, a disabled one was stopped
on purpose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from sqlalchemy import func, or_, select

from portal.extensions import db
from portal.inbound.fetch import FetchReport, run_fetch
from portal.inbound.health import fetch_lock
from portal.jobs import exclusive, redis_connection
from portal.models import Mailbox, Message, RawMessage
from portal.transport import open_session


class FetchRefused(Exception):
    """The fetch did not start; the message says why, in plain words."""


@dataclass
class FetchedNow:
    report: FetchReport
    # Each message this fetch decided or tried to, in the order it came: (stored, its inbound
    # message; None when deciding it failed and it is tried again at the next fetch).
    decided: list[tuple[RawMessage, Message | None]] = field(default_factory=list)


def fetch_now(mailbox: Mailbox, *, keys: str, secret: bytes, commit: Callable[[], None], ca_file: str | None = None,
              host: str | None = None) -> FetchedNow:
    if mailbox.status != "active":
        what = "a draft: activate it" if mailbox.status == "draft" else "disabled: enable it"
        raise FetchRefused(f"the mailbox {mailbox.address} is {what} on its page before fetching it")
    connection = redis_connection()
    try:
        connection.ping()
    except (RedisError, OSError) as exc:
        raise FetchRefused(f"Redis cannot be reached ({exc}); it holds the lock that keeps two fetches of "
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

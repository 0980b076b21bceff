"""Deciding stored messages in savepoints: a batch together (the fast path), or each message
alone, so that a failure stays with the message that caused it. A message that fails
MAX_DECIDE_TRIES times is shown as unprocessed with its error. Flush, never commit.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from portal.extensions import db
from portal.inbound.context import IngestContext
from portal.inbound.decide import IngestResult, decide
from portal.inbound.read import Prepared, prepare
from portal.models import Message, RawMessage
from portal.services import database_unreachable

log = logging.getLogger(__name__)

MAX_DECIDE_TRIES = 3


def decide_one(stored: RawMessage, ctx: IngestContext, *, max_tries: int = MAX_DECIDE_TRIES) -> IngestResult | None:
    """Run one stored message through the pipeline inside its own savepoint. A failure rolls
    back only this message; after `max_tries` it is shown as unprocessed with the error."""
    try:
        with db.session.begin_nested():
            result = decide(stored, ctx)
            ctx.numbers.save()
            ctx.route_tests.save()
        return result
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
        log.exception("deciding raw message %s failed", stored.id)
        ctx.forget_batch()
        stored.tries += 1
        stored.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if stored.tries >= max_tries:
            stored.state = "failed"
            _record_failure(stored)
        db.session.flush()
        return None


def decide_batch(batch: list[RawMessage], ctx: IngestContext,
                 examined: dict[int, Prepared] | None = None) -> list[IngestResult | None]:
    """The fast path: the batch prepared, looked up and decided together, written in one
    flush. If anything in it fails, it is rolled back and each message is decided alone in
    its own savepoint, so the failure stays with the message that caused it. `examined`:
    the messages already read (by raw id), e.g. by the Decider's reading thread."""
    try:
        with db.session.begin_nested():
            items = [_attach(examined[stored.id], stored) if examined and stored.id in examined
                     else prepare(ctx.reading, stored) for stored in batch]
            ctx.preload(items)
            ctx.writer.begin()
            results: list[IngestResult | None] = [decide(item.stored, ctx, item) for item in items]
            ctx.writer.write()
            ctx.numbers.save()
            ctx.route_tests.save()
        return results
    except Exception as exc:  # noqa: BLE001 - fall back to one message at a time
        if database_unreachable(exc):
            raise  # one at a time would meet the same outage: the fetch stops, the next one goes on
        log.warning("a batch of %d messages failed as a whole; deciding them one by one", len(batch), exc_info=True)
        ctx.forget_batch()
        for stored in batch:  # the batch's UPDATE of their state was rolled back with it
            db.session.expire(stored, ["state", "last_error"])
        return [decide_one(stored, ctx) for stored in batch if stored.state == "new"]


def _attach(item: Prepared, stored: RawMessage) -> Prepared:
    item.stored = stored
    return item


def _record_failure(stored: RawMessage) -> None:
    message = db.session.scalar(select(Message).where(Message.raw_message_id == stored.id))
    if message is None:
        message = Message(msp_id=stored.msp_id, mailbox_id=stored.mailbox_id, raw_message_id=stored.id, direction="in")
        db.session.add(message)
    message.outcome = "unprocessed"
    message.trace = [f"could not be processed after {stored.tries} tries: {stored.last_error}"]

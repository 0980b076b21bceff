"""Sending what is in the outbox: the scheduler and the fetch job ask for it."""

from __future__ import annotations

import fcntl
import logging
import time
from contextlib import contextmanager

from sqlalchemy import inspect, text

from portal.extensions import db
from portal.jobs import exclusive
from portal.models import Message
from portal.models.base import utcnow
from portal.outbound.deliver import accepted, deliver, due_batches, handed_over, settle_interrupted
from portal.outbound.outbox import SEND_OPTIONS
from portal.outbound.servers import send_environment
from portal.services import commit
from workers.runtime import job, outage_in_words

log = logging.getLogger(__name__)

# How long a run waits for the database to come back to record mail a server has accepted.
RECORD_PATIENCE_SECONDS = 300.0
RECORD_RETRY_SECONDS = 2.0

# A run stops taking new mail after this long, well inside RQ's job timeout (180 s by default);
# what is left goes out on the scheduler's next tick.
SEND_BUDGET_SECONDS = 100.0


# The namespace of our advisory locks on PostgreSQL (fetching.hold_mailbox uses the one before).
_SENDER_LOCK = (0x7465, 0)


@contextmanager
def one_sender():
    """Yields whether this process is the only one sending. The Redis lock says so too, but Redis
    may lose it (a restart) while a run goes on, and two runs would send the same mail twice.
    PostgreSQL: a session advisory lock on a connection of its own; SQLite: a lock on a file
    beside the database. Either is freed when its process dies; PostgreSQL's also when its
    machine vanishes, within TIDEMARK_DB_DEAD_PEER_SECONDS (portal.app)."""
    engine = db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            ours = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :id)"),
                                dict(zip(("ns", "id"), _SENDER_LOCK))).scalar()
            conn.commit()
            try:
                yield ours
            finally:
                if ours:
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), dict(zip(("ns", "id"), _SENDER_LOCK)))
                        conn.commit()
                    except Exception as exc:
                        if outage_in_words(exc) is None:
                            raise  # a lost connection took its session, and the lock, with it
        return
    path = engine.url.database
    if not path or path == ":memory:":
        yield True
        return
    with open(f"{path}.sending", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@job
def send_due(budget: float = SEND_BUDGET_SECONDS) -> dict:
    """Send every due outbound message. Mail is committed as "sending" before its server may take
    it and as sent at once after, so that a crash cannot send it twice; mail settled without a
    server (held, blocked, failed before sending) is committed a batch at a time."""
    counts: dict[str, int] = {}
    with exclusive(SEND_OPTIONS["job_id"]) as mine, one_sender() as ours:
        if not (mine and ours):
            return {"skipped": "another worker is sending"}
        env, servers = send_environment(), {}
        for message in settle_interrupted(env, servers):
            if message.delivery == "uncertain":
                log.warning("message %s may have been sent: the sending run before stopped while its server was "
                            "taking it; it is marked uncertain and not sent again", message.id)
                counts["uncertain"] = counts.get("uncertain", 0) + 1
            else:  # a Graph mailbox's, found in its Sent Items
                counts["found sent"] = counts.get("found sent", 0) + 1
        commit()
        stop_at = time.monotonic() + budget
        for batch in due_batches(utcnow()):
            for message in batch:
                if time.monotonic() >= stop_at:
                    return counts  # the job commits what this batch settled
                tries = message.details.get("attempts", 0)
                state = deliver(message, env, servers=servers, handing_over=record_handing_over)
                counts[state] = counts.get(state, 0) + 1
                if state == "sent":
                    if not record_accepted(message):
                        return counts  # recorded after an outage: the next run goes on
                elif message.details.get("attempts", 0) != tries:
                    commit()
            commit()
    return counts


def record_handing_over(message: Message) -> None:
    """Committed just before a server may take the message, the composed mail with it: a run that
    dies from here until record_accepted leaves it "sending", which the next run settles as
    uncertain instead of sending it again. If the commit fails, the message is not sent."""
    handed_over(message)
    session = db.session()
    session.expire_on_commit = False
    try:
        commit()
    finally:
        session.expire_on_commit = True


def record_accepted(message: Message) -> bool:
    """Commit a message its server has accepted. If the database is away just then, its row is
    kept in memory and written (with what the acceptance changes beside it) once the database
    answers again, for up to RECORD_PATIENCE_SECONDS: forgotten, the mail would go out a second
    time. False: it was recorded that way (the session was rolled back meanwhile)."""
    row = {attr.key: getattr(message, attr.key) for attr in inspect(Message).column_attrs}
    try:
        commit()
        return True
    except Exception as exc:
        if outage_in_words(exc) is None:
            raise
        log.warning("message %s was accepted by its server but not recorded: %s; trying again until it is",
                    row["id"], outage_in_words(exc))
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    while True:
        db.session.rollback()
        time.sleep(RECORD_RETRY_SECONDS)
        try:
            again = db.session.get(Message, row["id"])
            for key, value in row.items():
                setattr(again, key, value)
            accepted(again, utcnow())
            commit()
            log.warning("message %s is recorded as sent now that the database answers again", row["id"])
            return False
        except Exception as exc:
            if outage_in_words(exc) is None or time.monotonic() > deadline:
                log.error("message %s was accepted by its server and could not be recorded: it may go out twice",
                          row["id"])
                raise

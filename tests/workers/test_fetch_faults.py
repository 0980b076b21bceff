"""Fetching heals by itself after a fault, and two fetches of one mailbox at once (the Redis lock
gone) still thread every reply onto its root's ticket: real Dovecot, real Redis, real RQ."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from portal import jobs
from portal.extensions import db
from portal.models import Mailbox, Message, RawMessage, Ticket
from portal.services import commit
from portal.inbound.fetch import run_fetch
from portal.transport import open_session
from tests.dovecot import DroppingProxy, children_of  # noqa: F401 - children_of: other tests take it from here
from tests.mailfactory import email
from tests.workers.test_fetch import ROOT, acme, count, make_mailbox  # noqa: F401 - the fixture and helpers
from workers.fetch import enqueue_due_fetches


def threaded_mail(roots: int, replies: int, seed: int = 7) -> tuple[list[bytes], dict[str, str]]:
    """Roots and replies interleaved, each reply naming its root in References only; returns the
    mails in delivery order and {reply Message-ID: root Message-ID}."""
    rng = random.Random(seed)
    mails, root_of, root_ids = [], {}, []
    order = ["root"] * roots + ["reply"] * replies
    rng.shuffle(order)
    order.remove("root")
    order.insert(0, "root")  # a reply needs an earlier root
    for n, kind in enumerate(order):
        mid = f"<m{n}@threads.example>"
        if kind == "root":
            root_ids.append(mid)
            mails.append(email(subject=f"case {n}", message_id=mid))
        else:
            root = rng.choice(root_ids)
            root_of[mid] = root
            mails.append(email(subject=f"more on {root}", message_id=mid, references=[root]))
    return mails, root_of


def assert_threaded(roots: int, total: int, root_of: dict[str, str]) -> None:
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == total
    assert db.session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")) == total
    assert db.session.scalar(select(func.count()).select_from(RawMessage).where(RawMessage.state != "decided")) == 0
    ticket_of = dict(db.session.execute(
        select(Message.message_id, Message.ticket_id).where(Message.direction == "in")).all())
    empty = db.session.scalar(select(func.count()).select_from(Ticket).where(
        ~select(Message.id).where(Message.ticket_id == Ticket.id).exists()))
    misplaced = [reply for reply, root in root_of.items() if ticket_of[reply] != ticket_of[root]]
    assert (db.session.scalar(select(func.count()).select_from(Ticket)), empty, len(misplaced)) == (roots, 0, 0)


def _fetch_in_thread(app, mailbox_id: int, start: threading.Barrier, delay: float, errors: list) -> None:
    try:
        with app.app_context():
            start.wait()
            time.sleep(delay)
            cfg = app.config
            run_fetch(db.session.get(Mailbox, mailbox_id), open_session=open_session,
                      keys=cfg["TIDEMARK_ENCRYPTION_KEY"], secret=cfg["SECRET_KEY"].encode(), commit=commit,
                      batch=20, host=cfg["TIDEMARK_MAIL_HOST"])
            db.session.remove()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_two_fetches_of_one_mailbox_at_once_thread_every_reply_onto_its_root(
        world, app, acme, dovecot, mail_user, delay):  # noqa: F811
    mails, root_of = threaded_mail(roots=60, replies=140)
    dovecot.deliver_many(mail_user, mails)
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    start, errors = threading.Barrier(2), []
    # Straight to run_fetch: the Redis lock of the fetch job is not there to keep them apart.
    threads = [threading.Thread(target=_fetch_in_thread, args=(app, mailbox.id, start, d, errors))
               for d in (0.0, delay)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert_threaded(60, len(mails), root_of)


# --- the Redis lock and the job ids ------------------------------------------------------------------


def worker_env(app, database_url, redis_url, dovecot=None, **extra) -> dict:
    instance = str(Path(database_url[10:]).parent) if database_url.startswith("sqlite") else "/tmp"
    return {**os.environ, "TIDEMARK_ENV": "development", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "TIDEMARK_QUEUE": app.config["TIDEMARK_QUEUE"], "SECRET_KEY": app.config["SECRET_KEY"],
            "TIDEMARK_ENCRYPTION_KEY": app.config["TIDEMARK_ENCRYPTION_KEY"],
            "TIDEMARK_CA_FILE": str(dovecot.ca_file) if dovecot else "",
            "TIDEMARK_INSTANCE_DIR": instance, **extra}


def wait_for(condition, timeout: float, step: float = 0.1) -> float:
    """Seconds it took until condition() was true; fails after timeout."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


def test_the_lock_lives_while_its_holder_does_and_is_taken_back_after_redis_lost_it(app, redis):
    key = jobs.LOCK_PREFIX + "probe"
    with jobs.exclusive("probe", ttl=1, connection=redis) as mine:
        assert mine
        time.sleep(2.5)  # more than twice its ttl: the heartbeat renews it
        assert redis.exists(key)
        with jobs.exclusive("probe", ttl=1, connection=redis) as second:
            assert not second
        redis.delete(key)  # as a Redis restart would
        wait_for(lambda: redis.exists(key), timeout=1)
    assert not redis.exists(key)


def test_a_failed_fetch_job_does_not_block_the_next_poll(world, app, acme, dovecot, mail_user, redis):  # noqa: F811
    app.config["TIDEMARK_JOBS_SYNC"] = False
    dovecot.deliver(mail_user, email(subject="after the failure"))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    q = jobs.queue(redis)
    job_id = f"fetch-mailbox-{mailbox.id}"
    # A job under the fetch's id that failed, as one does when the database is away: RQ keeps it.
    q.enqueue("workers.maintenance.prune_sign_in_failures", "an argument too many", job_id=job_id,
              failure_ttl=300)
    SimpleWorker([q], connection=redis).work(burst=True)
    assert q.fetch_job(job_id).is_failed
    assert enqueue_due_fetches() == 1
    assert q.job_ids == [job_id]
    SimpleWorker([q], connection=redis).work(burst=True)
    assert count(Ticket) == 1 and db.session.scalar(select(Ticket.subject)) == "after the failure"


def test_a_killed_worker_frees_the_mailbox_within_the_lock_ttl_and_the_next_poll_fetches(
        world, app, acme, dovecot, mail_user, redis, redis_url, database_url, tmp_path):  # noqa: F811
    app.config["TIDEMARK_JOBS_SYNC"] = False
    app.config["TIDEMARK_LOCK_SECONDS"] = 3
    dovecot.deliver_many(mail_user, [email(subject=f"k{i}", body="x" * 2000) for i in range(30)])
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    q = jobs.queue(redis)
    job_id, key = f"fetch-mailbox-{mailbox.id}", jobs.LOCK_PREFIX + f"fetch-mailbox-{mailbox.id}"
    log = open(tmp_path / "worker.log", "w")
    with DroppingProxy(dovecot.imap_port, after_bytes=4000, mode="stall") as proxy:
        mailbox.port = proxy.port
        commit()
        assert enqueue_due_fetches() == 1
        worker = subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  env=worker_env(app, database_url, redis_url, dovecot, TIDEMARK_LOCK_SECONDS="3"))
        try:
            wait_for(lambda: proxy.tripped.is_set() and redis.exists(key), timeout=30)
            time.sleep(4)  # longer than the ttl: the heartbeat keeps the lock
            assert redis.exists(key) and 0 < redis.ttl(key) <= 3
            for pid in [*children_of(worker.pid), worker.pid]:  # its children (RQ's scheduler), then the worker
                os.kill(pid, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait()
            log.close()
    mailbox.port = dovecot.imap_port
    commit()
    assert q.fetch_job(job_id).get_status() == "started"  # RQ itself would not know for some 90 s
    waited = wait_for(lambda: not redis.exists(key), timeout=5)
    assert waited <= 3.5
    time.sleep(0.5)
    assert enqueue_due_fetches() == 1
    assert q.job_ids == [job_id], (tmp_path / "worker.log").read_text()
    SimpleWorker([q], connection=redis).work(burst=True)
    db.session.expire_all()
    assert count(RawMessage) == 30 and count(Ticket) == 30
    assert sorted(db.session.scalars(select(Ticket.subject))) == sorted(f"k{i}" for i in range(30))


# --- health ------------------------------------------------------------------------------------------


class DatabaseOutage:
    """A real database fault during a fetch. SQLite: another connection holds the write lock for
    `seconds` (the fetch's first write gives up after its 5 s busy timeout). PostgreSQL: once the
    fetch has stored its first batch, its server process is terminated, as by a restart."""

    def __init__(self, database_url: str, seconds: float = 6.0):
        self.url, self.seconds = database_url, seconds
        self.done = threading.Event()

    def __enter__(self):
        if self.url.startswith("sqlite"):
            import sqlite3

            self._conn = sqlite3.connect(self.url[len("sqlite:///"):], check_same_thread=False, isolation_level=None)
            self._conn.execute("BEGIN IMMEDIATE")
            self._thread = threading.Timer(self.seconds, self._release)
        else:
            self._thread = threading.Thread(target=self._terminate, daemon=True)
        self._thread.start()
        return self

    def _release(self):
        self._conn.execute("ROLLBACK")
        self._conn.close()
        self.done.set()

    def _terminate(self):
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            deadline = time.monotonic() + 30
            while not conn.execute(text("SELECT count(*) FROM raw_messages")).scalar() and time.monotonic() < deadline:
                time.sleep(0.01)
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        engine.dispose()
        self.done.set()

    def __exit__(self, *exc):
        self._thread.join(timeout=30)


def test_a_database_error_mid_fetch_is_shown_on_the_mailbox_in_plain_words_and_the_next_poll_finishes(
        world, app, acme, dovecot, mail_user, redis, database_url):  # noqa: F811
    from workers.fetch import fetch_mailbox

    dovecot.deliver_many(mail_user, [email(subject=f"d{i}") for i in range(300)])
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    with DatabaseOutage(database_url) as outage:
        with pytest.raises(Exception) as stopped:
            fetch_mailbox(mailbox.id)
    assert outage.done.is_set()
    db.session.rollback()
    db.session.expire_all()
    box = db.session.get(Mailbox, mailbox.id)
    assert box.last_error.startswith("The database could not be reached: "), box.last_error
    assert "SELECT" not in box.last_error and "INSERT" not in box.last_error and "://" not in box.last_error
    assert box.failure_count == 1 and type(stopped.value).__name__ == "OperationalError"
    assert not redis.exists(jobs.LOCK_PREFIX + f"fetch-mailbox-{mailbox.id}")
    box.next_poll_at = None  # the next poll
    commit()
    report = fetch_mailbox(mailbox.id)
    assert report["error"] is None
    db.session.expire_all()
    assert count(RawMessage) == 300 and count(Ticket) == 300
    assert db.session.get(Mailbox, mailbox.id).last_error is None


# --- a worker killed mid-fetch ----------------------------------------------------------------------


def test_a_worker_killed_mid_fetch_is_replaced_and_the_mailbox_resumes_with_nothing_lost_doubled_or_misthreaded(
        world, app, acme, dovecot, mail_user, redis, redis_url, database_url, tmp_path):  # noqa: F811
    app.config["TIDEMARK_JOBS_SYNC"] = False
    app.config["TIDEMARK_LOCK_SECONDS"] = 3
    mails, root_of = threaded_mail(roots=90, replies=210, seed=11)
    dovecot.deliver_many(mail_user, mails)
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    env = worker_env(app, database_url, redis_url, dovecot, TIDEMARK_LOCK_SECONDS="3")
    logs = [open(tmp_path / f"worker{n}.log", "w") for n in (1, 2)]

    def start_worker(n: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, env=env, stdout=logs[n],
                                stderr=subprocess.STDOUT)

    def stored() -> int:
        found = count(RawMessage)
        db.session.rollback()  # a fresh snapshot for the next look
        return found

    first = start_worker(0)
    second = None
    try:
        enqueue_due_fetches()
        wait_for(lambda: stored() >= 200, timeout=40, step=0.02)  # the first batch is in; the rest is not
        for pid in [*children_of(first.pid), first.pid]:
            os.kill(pid, signal.SIGKILL)
        first.wait()
        assert stored() < len(mails)
        second = start_worker(1)
        started = time.monotonic()

        def resumed() -> bool:
            enqueue_due_fetches()  # the scheduler's tick
            db.session.commit()
            done = stored() == len(mails) and not count(RawMessage, RawMessage.state == "new")
            db.session.rollback()
            return done
        wait_for(resumed, timeout=40, step=0.5)
        assert time.monotonic() - started < 3 + 30  # the lock's ttl, and a worker's start
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        for log in logs:
            log.close()
    assert_threaded(90, len(mails), root_of)
    from tests.workers.test_fetch import seen_flags

    assert seen_flags(dovecot, mail_user) == [True] * len(mails)
    assert db.session.get(Mailbox, mailbox.id).failure_count == 0

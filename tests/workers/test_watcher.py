"""The IMAP IDLE watcher on a real Dovecot: new mail asks for the mailbox's fetch within seconds,
a connection the server ends is made again, a disabled mailbox is let go, a server without IDLE
is polled (and its page says why), two watchers split the mailboxes, a Redis restarted empty is
taken up again."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import JobStatus
from sqlalchemy import select

from portal.extensions import db
from portal.inbound.health import due_mailboxes, fetch_lock
from portal.inbound.push import LEASE_PREFIX, STATE_PREFIX
from portal.jobs import LOCK_PREFIX, redis_connection
from portal.models import Ticket
from portal.models.base import utcnow
from portal.services import commit
from tests.mailfactory import email
from workers.fetch import fetch_mailbox
from workers.watcher import Watcher


@pytest.fixture
def acme(world, app, dovecot):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.user(msp, email="ana@acme.example", role="admin")
    return msp


def make_mailbox(world, msp, server, user, n=0, **values):
    values.setdefault("status", "active")
    address = f"support{n}@acme.example" if n else "support@acme.example"
    values.setdefault("protocol", "imap")
    values.setdefault("port", server.imap_port)
    values.setdefault("after_action", "seen" if values["protocol"] == "imap" else "keep")
    return world.mailbox(msp, address=address, security="none", host="127.0.0.1", username=user.name,
                         password=user.password, acknowledge=False, **values)


@pytest.fixture
def start_watcher(app, redis):
    """Start a watcher in this process (refresh: seconds between readings of the mailboxes)."""
    started: list[tuple[Watcher, threading.Thread]] = []

    def start(refresh: float = 0.5) -> Watcher:
        watcher = Watcher(app, redis_connection(), refresh=refresh)
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        started.append((watcher, thread))
        return watcher

    yield start
    for watcher, thread in started:
        watcher.stopping.set()
        thread.join(30)


def wait_for(condition, timeout=15.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come within {timeout} s")


def fetch_queued(app, redis, mailbox_id) -> bool:
    return fetch_lock(mailbox_id) in Queue(app.config["TIDEMARK_QUEUE"], connection=redis).job_ids


def run_queued_fetch(app, redis, mailbox_id) -> dict:
    """What a worker does with the queued job (here, in the test's process)."""
    job = Queue(app.config["TIDEMARK_QUEUE"], connection=redis).fetch_job(fetch_lock(mailbox_id))
    assert job.func_name == "workers.fetch.fetch_mailbox" and job.args == (mailbox_id,)
    job.delete()
    return fetch_mailbox(mailbox_id)


def test_new_mail_wakes_a_fetch_within_seconds(world, acme, app, dovecot, mail_user, redis, start_watcher,
                                                browser):
    box = make_mailbox(world, acme, dovecot, mail_user)
    watcher = start_watcher()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
    # On connecting it asks for one fetch (mail may have come while nobody watched).
    wait_for(lambda: fetch_queued(app, redis, box.id), what="the first fetch")
    assert run_queued_fetch(app, redis, box.id)["fetched"] == 0
    assert not fetch_queued(app, redis, box.id)

    dovecot.deliver(mail_user, email(subject="printer on fire", sender="kim@contoso.com"))
    began = time.monotonic()
    wait_for(lambda: fetch_queued(app, redis, box.id), timeout=5, what="the fetch of the new mail")
    assert time.monotonic() - began < 5
    assert run_queued_fetch(app, redis, box.id)["outcomes"] == {"created": 1}
    assert [t.subject for t in db.session.scalars(select(Ticket))] == ["printer on fire"]

    # While pushed, the scheduler leaves the mailbox to the watcher until its safety poll.
    db.session.refresh(box)
    box.next_poll_at = utcnow()
    commit()
    assert box not in due_mailboxes(utcnow())
    box.last_poll_at = utcnow() - timedelta(minutes=15, seconds=1)  # its safety poll is due
    commit()
    assert box in due_mailboxes(utcnow())

    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "push since" in page
    assert "push since" in browser.get("/mailboxes").get_data(as_text=True)

    # SIGTERM's path: the connection ends and the lease goes; the page says no watcher runs, and
    # the scheduler polls the mailbox at its own interval again.
    watcher.stopping.set()
    wait_for(lambda: not redis.exists(LEASE_PREFIX + str(box.id)), what="the lease to go")
    assert not redis.exists(STATE_PREFIX + str(box.id))
    wait_for(lambda: "polling: no watcher running" in browser.get(f"/mailboxes/{box.id}").get_data(as_text=True),
             timeout=5, what="no watcher")
    assert box in due_mailboxes(utcnow())


def test_the_server_ends_the_connection_and_the_watcher_connects_again(world, acme, app, dovecot, mail_user, redis,
                                                                        start_watcher):
    box = make_mailbox(world, acme, dovecot, mail_user)
    watcher = start_watcher()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
    wait_for(lambda: fetch_queued(app, redis, box.id), what="the first fetch")
    run_queued_fetch(app, redis, box.id)
    first = watcher.held[box.id].watch

    dovecot.kick(mail_user)
    wait_for(lambda: not first.is_alive(), timeout=10, what="the watch to see the server end it")
    wait_for(lambda: watcher.held[box.id].watch not in (None, first) and watcher.holding()[box.id] == "push",
             timeout=15, what="a new connection")
    # The new connection asked for a fetch (mail may have come meanwhile): take it, then new mail.
    wait_for(lambda: fetch_queued(app, redis, box.id), what="the fetch after reconnecting")
    run_queued_fetch(app, redis, box.id)
    dovecot.deliver(mail_user, email(subject="after the kick", sender="kim@contoso.com"))
    wait_for(lambda: fetch_queued(app, redis, box.id), timeout=5, what="the fetch of the new mail")
    assert run_queued_fetch(app, redis, box.id)["outcomes"] == {"created": 1}


def test_a_mailbox_disabled_while_idling_is_let_go(world, acme, app, dovecot, mail_user, redis, start_watcher,
                                                   browser):
    box = make_mailbox(world, acme, dovecot, mail_user)
    watcher = start_watcher()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
    watch = watcher.held[box.id].watch
    box.status = "disabled"
    commit()
    wait_for(lambda: watcher.holding() == {}, timeout=10, what="the mailbox to be let go")
    wait_for(lambda: not watch.is_alive(), timeout=5, what="the connection to end")
    assert not redis.exists(LEASE_PREFIX + str(box.id)) and not redis.exists(STATE_PREFIX + str(box.id))
    # Mail that comes now asks for nothing.
    Queue(app.config["TIDEMARK_QUEUE"], connection=redis).empty()
    dovecot.deliver(mail_user, email(subject="while disabled", sender="kim@contoso.com"))
    time.sleep(2)
    assert not fetch_queued(app, redis, box.id)
    # Enabled again: watched again.
    box.status = "active"
    commit()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push again")


def test_a_server_without_idle_is_polled_and_the_page_says_why(world, acme, app, dovecot_without_idle, redis,
                                                               start_watcher, browser):
    user = dovecot_without_idle.new_user()
    box = make_mailbox(world, acme, dovecot_without_idle, user)
    watcher = start_watcher()
    wait_for(lambda: watcher.held.get(box.id) is not None and watcher.held[box.id].state[1].startswith("the server"),
             what="the watcher to find no IDLE")
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "polling: the server does not offer IDLE" in page
    box.next_poll_at = utcnow()
    commit()
    assert box in due_mailboxes(utcnow())  # polled at its own interval


def test_two_watchers_split_the_mailboxes_without_overlap(world, acme, app, dovecot, redis, start_watcher):
    boxes = [make_mailbox(world, acme, dovecot, dovecot.new_user(), n) for n in range(4)]
    first = start_watcher()
    wait_for(lambda: len(first.holding()) == 4, what="the first watcher to take all")
    second = start_watcher()

    def split() -> bool:
        a, b = set(first.holding()), set(second.holding())
        return len(a) == 2 and len(b) == 2 and not a & b and a | b == {m.id for m in boxes}

    wait_for(split, timeout=20, what="an even split")
    wait_for(lambda: set(first.holding().values()) == set(second.holding().values()) == {"push"}, what="push")
    owners = {int(k.decode().rpartition(":")[2]): redis.get(k).decode() for k in redis.keys(LEASE_PREFIX + "*")}
    assert owners == {**{i: first.token for i in first.holding()}, **{i: second.token for i in second.holding()}}

    # One stops: the other takes its mailboxes over.
    second.stopping.set()
    wait_for(lambda: len(first.holding()) == 4, timeout=20, what="the take-over")


def test_mail_that_comes_while_its_fetch_runs_is_fetched_after_that_fetch(world, acme, app, dovecot, mail_user, redis,
                                                                          start_watcher):
    """The running fetch may have searched the folder before the mail came: once it ends, the
    watcher asks for another (one fetch per mailbox at a time all the same)."""
    box = make_mailbox(world, acme, dovecot, mail_user)
    watcher = start_watcher()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
    wait_for(lambda: fetch_queued(app, redis, box.id), what="the first fetch")
    queue = Queue(app.config["TIDEMARK_QUEUE"], connection=redis)
    job = queue.fetch_job(fetch_lock(box.id))
    queue.remove(job)
    job.set_status(JobStatus.STARTED)  # a worker runs it, and holds its lock
    redis.set(LOCK_PREFIX + job.id, "a worker", ex=60)

    dovecot.deliver(mail_user, email(subject="during the fetch", sender="kim@contoso.com"))
    wait_for(lambda: box.id in watcher.again, timeout=5, what="the watcher to wait for the running fetch")
    assert not fetch_queued(app, redis, box.id)
    job.delete()  # the fetch ends
    redis.delete(LOCK_PREFIX + job.id)
    wait_for(lambda: fetch_queued(app, redis, box.id), timeout=5, what="the next fetch")
    assert box.id not in watcher.again
    assert run_queued_fetch(app, redis, box.id)["outcomes"] == {"created": 1}


def test_idle_is_issued_again_before_the_server_would_end_it(world, acme, app, dovecot, mail_user, redis,
                                                            start_watcher, monkeypatch):
    """RFC 2177: a server may end an IDLE after 30 minutes; the watcher sends DONE and IDLE again
    every REIDLE_SECONDS (here one second) on the same connection, and still wakes."""
    from portal.transport import ImapSession
    from workers import watcher as module

    monkeypatch.setattr(module, "REIDLE_SECONDS", 1.0)
    issued = []
    original = ImapSession.idle
    monkeypatch.setattr(ImapSession, "idle", lambda self: (issued.append(id(self)), original(self))[1])
    box = make_mailbox(world, acme, dovecot, mail_user)
    watcher = start_watcher()
    wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
    wait_for(lambda: fetch_queued(app, redis, box.id), what="the first fetch")
    run_queued_fetch(app, redis, box.id)
    wait_for(lambda: len(issued) >= 3, timeout=10, what="IDLE issued again")
    assert len(set(issued)) == 1  # one connection throughout
    dovecot.deliver(mail_user, email(subject="after re-idling", sender="kim@contoso.com"))
    wait_for(lambda: fetch_queued(app, redis, box.id), timeout=5, what="the fetch of the new mail")
    assert run_queued_fetch(app, redis, box.id)["outcomes"] == {"created": 1}


def test_the_page_says_why_a_mailbox_is_polled(world, acme, app, dovecot, mail_user, redis, start_watcher, browser):
    from portal.inbound.push import push_states
    from tests.conftest import free_port

    unreachable = make_mailbox(world, acme, dovecot, mail_user, 1, port=free_port())
    pop3 = make_mailbox(world, acme, dovecot, mail_user, 2, protocol="pop3", port=dovecot.pop3_port)
    now = utcnow()
    window = f"{now:%H}:00-{(now + timedelta(hours=1)):%H}:00"
    resting = make_mailbox(world, acme, dovecot, mail_user, 3, skip_windows=[window])
    watcher = start_watcher()
    wait_for(lambda: watcher.held.get(unreachable.id) is not None
             and watcher.held[unreachable.id].state[1].startswith("reconnecting"), what="a failed connection")
    wait_for(lambda: "reconnecting" in push_states([unreachable], utcnow())[unreachable.id].words,
             what="the state in Redis")
    assert set(watcher.holding()) == {unreachable.id}
    browser.sign_in("ana@acme.example")
    page = browser.get("/mailboxes").get_data(as_text=True)
    assert "polling: reconnecting after could not connect to 127.0.0.1:" in page and "connection refused" in page
    assert "polling: POP3 has no push" in page
    assert f"polling: inside the skip window {window}" in page
    assert pop3.id not in watcher.holding() and resting.id not in watcher.holding()


def test_redis_restarted_without_its_data_the_watcher_takes_its_mailboxes_again_and_push_goes_on(
        world, acme, app, dovecot, mail_user, tmp_path):
    """Redis comes back empty (no persistence): leases, push states and queue are gone. The
    watcher keeps its IDLE connections, writes its leases and states again, and new mail still
    asks for its fetch."""
    import shutil
    import subprocess

    from redis import Redis

    from tests.conftest import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL)
        wait_for(lambda: _answers(url), what="redis-server to start")
        return proc

    server = start_redis()
    app.config["REDIS_URL"] = url
    redis = Redis.from_url(url)
    watcher = None
    try:
        box = make_mailbox(world, acme, dovecot, mail_user)
        watcher = Watcher(app, redis_connection(), refresh=0.5)
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        wait_for(lambda: watcher.holding() == {box.id: "push"}, what="push")
        wait_for(lambda: fetch_queued(app, redis, box.id), what="the first fetch")
        run_queued_fetch(app, redis, box.id)

        server.terminate()
        server.wait(timeout=10)
        time.sleep(2)  # the watcher meets Redis away: it says so and goes on
        server = start_redis()
        assert not redis.exists(LEASE_PREFIX + str(box.id))
        wait_for(lambda: redis.exists(LEASE_PREFIX + str(box.id)) and redis.exists(STATE_PREFIX + str(box.id)),
                 timeout=20, what="the lease and the push state written again")
        dovecot.deliver(mail_user, email(subject="after redis came back", sender="kim@contoso.com"))
        wait_for(lambda: fetch_queued(app, redis, box.id), timeout=10, what="the fetch of the new mail")
        assert run_queued_fetch(app, redis, box.id)["outcomes"] == {"created": 1}
    finally:
        if watcher is not None:
            watcher.stopping.set()
            thread.join(30)
        server.terminate()
        server.wait(timeout=10)


def _answers(url: str) -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (RedisError, OSError):
        return False

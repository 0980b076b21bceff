"""A worker's reading process (portal.inbound.reading): batches read in a second process, a
process that dies costs only a reading again, and it never outlives its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.models import Message, RawMessage
from tests.mailfactory import email

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reading_process():
    from portal.inbound import reading

    reading.start()
    yield reading
    reading.stop()


def store_mail(box, count: int) -> list[RawMessage]:
    """`count` messages from one sender; every third after the first a reply to the first."""
    from portal.inbound import fetch
    from portal.services import commit

    kept = []
    for i in range(count):
        reply = i % 3 == 2
        raw_bytes = email(subject="Re: printer" if reply else f"new {i}", message_id=f"<m{i}@contoso.com>",
                          in_reply_to="<m0@contoso.com>" if reply else None, sender="alice@contoso.com")
        kept.append(fetch.store_raw(box, raw_bytes, server_id=str(i + 1), folder="INBOX"))
    commit()
    return kept


def outcomes(kept: list[RawMessage]) -> list[tuple[str, int | None]]:
    from portal.extensions import db

    by_raw = {m.raw_message_id: m for m in db.session.scalars(select(Message).where(Message.direction == "in"))}
    return [(by_raw[r.id].outcome, by_raw[r.id].ticket_id) for r in kept]


def test_batches_are_read_in_the_reading_process(app, acme, reading_process, monkeypatch):
    """With the process started, the worker itself reads nothing: reading here fails, and every
    message is still decided, replies on their ticket across batches."""
    from portal.inbound import fetch, read
    from portal.services import commit

    kept = store_mail(acme.box, 7)

    def not_here(setup, raw_bytes):
        raise AssertionError("read in the worker, not in the reading process")

    monkeypatch.setattr(read, "examine", not_here)
    report = fetch.decide_pending(acme.box, app.config["SECRET_KEY"].encode(), commit, batch=2)

    assert (report.decided, report.failed) == (7, 0)
    got = outcomes(kept)
    assert [o for o, _ in got] == ["created", "created", "appended", "created", "created", "appended", "created"]
    assert got[2][1] == got[5][1] == got[0][1]
    assert reading_process.pid() not in (None, os.getpid())


def test_without_the_process_the_worker_reads_itself(app, acme, monkeypatch):
    """The same run with no reading process started reads in the worker (the check above is
    not one that passes whatever happens)."""
    from portal.inbound import fetch, read
    from portal.services import commit

    store_mail(acme.box, 3)
    calls = []
    real = read.examine
    monkeypatch.setattr(read, "examine", lambda setup, raw_bytes: calls.append(1) or real(setup, raw_bytes))
    report = fetch.decide_pending(acme.box, app.config["SECRET_KEY"].encode(), commit, batch=2)
    assert report.decided == 3 and len(calls) == 3


def test_a_reading_process_that_died_is_replaced_and_nothing_is_lost(app, acme, reading_process, caplog):
    from portal.inbound import fetch
    from portal.services import commit

    kept = store_mail(acme.box, 5)
    first = reading_process.pid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not getattr(reading_process._pool, "_broken", False) and time.monotonic() < deadline:
        time.sleep(0.05)

    report = fetch.decide_pending(acme.box, app.config["SECRET_KEY"].encode(), commit, batch=2)

    assert (report.decided, report.failed) == (5, 0)
    assert [o for o, _ in outcomes(kept)] == ["created", "created", "appended", "created", "created"]
    assert reading_process.pid() not in (None, first)
    assert "the reading process had ended; starting a new one" in caplog.text


def test_a_batch_the_reading_process_cannot_finish_is_read_in_the_worker(app, acme, reading_process, caplog):
    """The process dies while it holds a batch: that batch is read again in the worker."""
    from portal.inbound import fetch
    from portal.services import commit

    kept = store_mail(acme.box, 3)
    victim = reading_process.pid()
    # The next batch waits behind a reading that never ends, and the process is killed under it.
    reading_process.reader().submit(time.sleep, 60)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1); os.kill({victim}, 9)"])
    try:
        report = fetch.decide_pending(acme.box, app.config["SECRET_KEY"].encode(), commit, batch=5)
    finally:
        killer.wait(timeout=30)

    assert (report.decided, report.failed) == (3, 0)
    assert [o for o, _ in outcomes(kept)] == ["created", "created", "appended"]
    assert "the reading process failed a batch (BrokenProcessPool" in caplog.text
    assert reading_process.pid() not in (None, victim)


def test_a_job_time_limit_met_while_waiting_for_a_reading_is_not_taken_for_a_failed_reading(reading_process):
    """RQ stops a job at its time limit by raising in the worker's thread: that must end the job,
    not count as a reading that failed (after which the batch would be read in place)."""

    class TimeLimit(Exception):
        pass

    def alarm(*_):
        raise TimeLimit

    waiting = reading_process.reader().submit(time.sleep, 3)
    before = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(TimeLimit):
            reading_process.result_or_none(waiting)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_the_reading_process_ends_when_its_worker_is_killed():
    script = ("from portal.inbound import reading; reading.start(); print(reading.pid(), flush=True); "
              "import time; time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TIDEMARK_ENV": "testing"})
    try:
        child = int(parent.stdout.readline())
        # The reading process, and multiprocessing's resource tracker beside it.
        started = children_of(parent.pid)
        assert child in started and all(alive(pid) for pid in started)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if alive(pid)], "a process outlived its worker"
    finally:
        parent.kill()
        parent.wait()


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for a parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children_of(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found

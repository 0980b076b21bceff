"""Time to ticket with push (IMAP IDLE) beside polling, and the watcher's memory.

    .venv/bin/python -m tests.bench.bench_push [--mailboxes 200] [--seconds 60] [--every 0.1]
        [--database postgresql|sqlite] [--no-polling]

A private Dovecot and Redis, a scratch database (PostgreSQL when one answers, as issue #19
asks), N active IMAP mailboxes, one per Dovecot user. Then, per mode:

- push: one `python -m workers.watcher` and one `python -m workers.worker`;
- polling: one `python -m workers.cron` and one worker, the mailboxes at the default poll interval.

Each mailbox starts as polled once, its next poll somewhere within its interval. Push: once every
mailbox is pushed, the fetches each connection asks for on connecting (of empty mailboxes) are
dropped and the worker starts. Then one new
message goes into a random mailbox every `every` seconds for `seconds` seconds. Time to ticket:
from the moment the message is in the Maildir to the ticket's creation in the database. The
watcher's resident memory (VmRSS, and its peak VmHWM) is read from /proc once all its
connections wait in IDLE. Not a pytest test. Targets: p95 ≤ 2 s with push; < 150 MB RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta, timezone
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, text

from tests.bench.bench_ingest import PrivateRedis
from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable
from tests.dovecot import DovecotServer
from tests.mailfactory import email

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
P95_TARGET, RSS_TARGET_MB = 2.0, 150.0


def say(line: str = "") -> None:
    print(line, flush=True)


def prepare(url: str, dovecot: DovecotServer, users, keys: str, secret: str) -> list[int]:
    from portal.app import create_app
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Mailbox
    from portal.models.base import utcnow
    from portal.services import clients, commit
    from portal.services.mailboxes import save_mailbox

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TIDEMARK_ENCRYPTION_KEY=keys, SECRET_KEY=secret)
    with app.app_context():
        try:
            migrate_quietly()
            msp = clients.create_msp(clients.ClientInput(name="Bench MSP"))
            ids = []
            for n, user in enumerate(users):
                mailbox, _ = save_mailbox(msp, msp, {
                    "address": f"box{n}@bench.example", "protocol": "imap", "host": dovecot.host,
                    "port": dovecot.imap_port, "security": "none", "username": user.name, "password": user.password,
                    "status": "active", "acknowledge": False}, keys=keys, actor=None)
                ids.append(mailbox.id)
            # A steady state: each polled once, the next polls spread over the interval.
            now = utcnow()
            for mailbox in db.session.scalars(select(Mailbox)):
                mailbox.last_poll_at = mailbox.last_success_at = now
                mailbox.next_poll_at = now + timedelta(seconds=random.uniform(0, mailbox.poll_interval))
            commit()
            return ids
        finally:
            db.session.remove()
            db.engine.dispose()


def rss_mb(pid: int) -> tuple[float, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


def start(module: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise SystemExit(f"{what} did not happen within {timeout:.0f} s")


def pushed(redis: Redis) -> int:
    return sum(1 for raw in redis.mget(redis.keys("tidemark:push:state:*") or ["-"]) if raw and b'"push"' in raw)


def wake_ups(queue: Queue, dovecot: DovecotServer, users, ids: list[int], count: int) -> list[float]:
    """The watcher's part alone, before any worker runs: from a message into the Maildir to its
    mailbox's fetch job in the queue, `count` times, one mailbox at a time."""
    took = []
    for n in range(count):
        box = random.randrange(len(users))
        job_id = f"fetch-mailbox-{ids[box]}"
        began = time.monotonic()
        dovecot.deliver(users[box], email(subject=f"wake {n}", to=(f"box{box}@bench.example",)))
        while job_id not in queue.job_ids:
            if time.monotonic() - began > 30:
                raise SystemExit(f"no fetch was asked for within 30 s of mail into mailbox {ids[box]}")
            time.sleep(0.005)
        took.append(time.monotonic() - began)
    queue.empty()  # the worker fetches these with the rest; their tickets are not counted
    return sorted(took)


def run_mode(mode: str, args, dovecot: DovecotServer, users, pg_url: str, workdir: Path, redis_url: str) -> dict:
    keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
    database = ScratchDatabase(args.database, workdir, pg_url)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    procs: list[subprocess.Popen] = []
    try:
        ids = prepare(database.url, dovecot, users, keys, secret)
        engine = create_engine(database.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_"))}
        env.update(TIDEMARK_ENV="development", DATABASE_URL=database.url, REDIS_URL=redis_url,
                   TIDEMARK_QUEUE=f"bench-{uuid.uuid4().hex[:8]}", SECRET_KEY=secret, TIDEMARK_ENCRYPTION_KEY=keys,
                   TIDEMARK_INSTANCE_DIR=str(workdir / "instance"), TIDEMARK_JOBS_SYNC="0")
        log = workdir / f"{mode}.log"
        result: dict = {"mode": mode}
        if mode == "push":
            watcher = start("workers.watcher", env, log)
            procs.append(watcher)
            wait(lambda: pushed(redis) == len(ids), 120 + len(ids) / 5, f"all {len(ids)} mailboxes pushed")
            # Each connection asked for a fetch of its (empty) mailbox: nothing to measure there.
            queue = Queue(env["TIDEMARK_QUEUE"], connection=redis)
            queue.empty()
            result["wake"] = wake_ups(queue, dovecot, users, ids, args.wake_ups)
        else:
            procs.append(start("workers.cron", env, log))
        procs.append(start("workers.worker", env, log))
        time.sleep(5)
        if mode == "push":
            result["rss_mb"], result["hwm_mb"] = rss_mb(watcher.pid)
        delivered: dict[str, float] = {}
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < args.seconds:
            box = random.randrange(len(users))
            subject = f"bench {mode} {n}"
            dovecot.deliver(users[box], email(subject=subject, to=(f"box{box}@bench.example",),
                                              sender=f"someone{n}@customer.example"))
            delivered[subject] = time.time()
            n += 1
            time.sleep(max(0.0, began + n * args.every - time.monotonic()))

        def created() -> dict:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT subject, created_at FROM tickets WHERE subject LIKE :p"),
                                    {"p": f"bench {mode} %"}).all()
            # SQLite hands back naive UTC times.
            return {s: (c if c.tzinfo else c.replace(tzinfo=timezone.utc)).timestamp() for s, c in rows}

        wait(lambda: len(created()) >= len(delivered), 600, "every ticket")
        made = created()
        lags = sorted(made[s] - t for s, t in delivered.items())
        result.update(messages=len(delivered), p50=statistics.median(lags),
                      p95=lags[max(0, int(len(lags) * 0.95) - 1)], worst=lags[-1])
        if mode == "push":
            result["rss_after_mb"] = rss_mb(watcher.pid)[0]
        engine.dispose()
        return result
    finally:
        for proc in reversed(procs):
            stop(proc)
        database.drop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--no-polling", action="store_true", help="only the push run")
    parser.add_argument("--wake-ups", type=int, default=20, help="mail → fetch asked, measured alone")
    args = parser.parse_args(argv)
    pg_url = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    if args.database == "postgresql" and (why := pg_unreachable(pg_url)):
        say(f"PostgreSQL unreachable ({why}); on SQLite instead")
        args.database = "sqlite"
    workdir = Path(tempfile.mkdtemp(prefix="tidemark-bench-push-"))
    root = Path(tempfile.mkdtemp(prefix="tmdp-"))
    root.chmod(0o755)
    dovecot = DovecotServer(root).start()
    redis = PrivateRedis(workdir)
    try:
        users = [dovecot.new_user("push") for _ in range(args.mailboxes)]
        say(f"== push vs polling: {args.mailboxes} IMAP mailboxes on Dovecot, one message every {args.every} s "
            f"for {args.seconds:.0f} s, one worker, {args.database} ==")
        modes = ["push"] if args.no_polling else ["push", "polling"]
        for mode in modes:
            r = run_mode(mode, args, dovecot, users, pg_url, workdir, redis.url)
            line = (f"{mode:8} time to ticket p50 {r['p50']:6.2f} s  p95 {r['p95']:6.2f} s  "
                    f"worst {r['worst']:6.2f} s  ({r['messages']} messages)")
            if mode == "push":
                line += f"  [target p95 ≤ {P95_TARGET:g} s: {'met' if r['p95'] <= P95_TARGET else 'MISSED'}]"
            say(line)
            if mode == "push" and r["wake"]:
                wake = r["wake"]
                say(f"watcher  mail → fetch job queued (the watcher alone, {len(wake)} times): "
                    f"p50 {statistics.median(wake):.2f} s, worst {wake[-1]:.2f} s")
            if mode == "push":
                say(f"watcher  RSS with {args.mailboxes} idle connections {r['rss_mb']:.0f} MB (peak {r['hwm_mb']:.0f} MB, "
                    f"after the run {r['rss_after_mb']:.0f} MB)  [target < {RSS_TARGET_MB:g} MB: "
                    f"{'met' if r['hwm_mb'] < RSS_TARGET_MB else 'MISSED'}]")
    finally:
        redis.stop()
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)
        if os.environ.get("BENCH_KEEP"):
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

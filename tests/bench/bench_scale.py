"""Scale-out: the same mail ingested by one worker, then (a fresh database, fresh mailboxes) by
several worker processes at once, on PostgreSQL; the rate of each and their ratio.

    .venv/bin/python -m tests.bench.bench_scale [--mailboxes 20] [--per-mailbox 1000] [--workers 1,2]
        [--reading-process]

Per worker count: a fresh database built by the migrations, one MSP with one client and one active
IMAP mailbox per Dovecot user, each user holding the first --per-mailbox messages of the kit's
generator (../shared/bench/gen_mail.py) with Message-IDs made unique per mailbox, so that every
mailbox threads only its own mail. One fetch job per mailbox is queued on a private Redis, then the
workers (`python -m workers.worker --burst`) start together; the wall clock runs until the last
one has ended. The running rate leaves out the start-up: from the first job taken to the last
one done (RQ's times of the jobs). Read back: every message stored once and decided, nothing left unseen, which
worker took which mailbox. Beside the rates, where the time went: CPU seconds of the workers and
of the run's PostgreSQL backends, the machine's busy share of its cores, and how often a backend
of the run waited on a lock (sampled from pg_stat_activity). Not a pytest test.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.bench.bench_ingest import DEFAULT_PG, PrivateRedis, index_mailbox, load_messages, unseen_left
from tests.bench.bench_parse import SHARED_GEN
from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable
from tests.dovecot import DOVECOT, DovecotServer

ROOT = Path(__file__).resolve().parents[2]
TARGET = 1.8  # two workers against one, on this 2-core machine (issue #19)
SAMPLE_S = 0.2


def say(line: str = "") -> None:
    print(line, flush=True)


def per_mailbox(raws: list[bytes], k: int) -> list[bytes]:
    """The generator's Message-IDs (also in In-Reply-To and References) made unique to mailbox k."""
    return [raw.replace(b"<bench.42.", b"<bench.42.m%d." % k) for raw in raws]


def prepare(url: str, dovecot: DovecotServer, users: list, keys: str, secret: str) -> list[int]:
    """Migrate, then one MSP with a client and an active IMAP mailbox per user. Returns their ids."""
    from portal.app import create_app
    from portal.extensions import db
    from portal.services import clients, commit
    from portal.services.mailboxes import save_mailbox

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TIDEMARK_ENCRYPTION_KEY=keys, SECRET_KEY=secret)
    with app.app_context():
        try:
            migrate_quietly()
            msp = clients.create_msp(clients.ClientInput(name="Bench MSP"))
            ids = []
            for k, user in enumerate(users):
                client = clients.create_client(msp, clients.ClientInput(name=f"Customer {k}"), None)
                mailbox, _ = save_mailbox(msp, client, {
                    "address": f"support{k}@customer{k}.example.test", "protocol": "imap", "host": dovecot.host,
                    "port": dovecot.imap_port, "security": "none", "username": user.name,
                    "password": user.password, "status": "active"}, keys=keys, actor=None)
                ids.append(mailbox)
            commit()
            return [m.id for m in ids]
        finally:
            db.session.remove()
            db.engine.dispose()


# --- where the time goes --------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class Sampler(threading.Thread):
    """While the workers run: the database's backends (CPU seconds, per /proc, when the server
    runs on this machine) and what they are doing, per pg_stat_activity."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.database = make_url(url).database
        self.stop = threading.Event()
        self.cpu: dict[int, float] = {}
        self.states: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.wait(SAMPLE_S):
                rows = conn.execute(text(
                    "SELECT pid, state, wait_event_type FROM pg_stat_activity"
                    " WHERE datname = :db AND pid <> pg_backend_pid() AND backend_type = 'client backend'"),
                    {"db": self.database}).all()
                for pid, state, waiting in rows:
                    if state == "active":
                        self.states["lock" if waiting == "Lock" else "waiting on " + waiting if waiting else "working"] += 1
                    elif state == "idle in transaction":
                        self.states["in a transaction, waiting on the worker"] += 1
                    used = _cpu_seconds(pid)
                    if used is not None:
                        self.cpu[pid] = used
        self.engine.dispose()

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)


# --- one run --------------------------------------------------------------------------------------


def run(workers: int, mails: list[list[bytes]], dovecot: DovecotServer, redis_url: str, pg_url: str,
        scratch: Path, flags: tuple[str, ...] = ()) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-{workers}-", dir=scratch))
    users = [dovecot.new_user(f"scale{k}") for k in range(len(mails))]
    database = None
    procs: list[subprocess.Popen] = []
    try:
        for user, raws in zip(users, mails):
            dovecot.deliver_many(user, raws)
            index_mailbox(dovecot, user)
        keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
        database = ScratchDatabase("postgresql", workdir, pg_url)
        mailbox_ids = prepare(database.url, dovecot, users, keys, secret)

        from portal.inbound.health import fetch_options

        queue_name = f"scale-{uuid.uuid4().hex[:8]}"
        connection = Redis.from_url(redis_url)
        connection.flushdb()
        q = Queue(queue_name, connection=connection)
        job_ids = []
        for mid in mailbox_ids:
            # Kept after success (fetch jobs keep nothing): their start and end times are read back.
            job_ids.append(q.enqueue("workers.fetch.fetch_mailbox", mid, **{**fetch_options(mid), "result_ttl": 3600}).id)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_"))}
        env.update(TIDEMARK_ENV="development", DATABASE_URL=database.url, REDIS_URL=redis_url,
                   TIDEMARK_QUEUE=queue_name, SECRET_KEY=secret, TIDEMARK_ENCRYPTION_KEY=keys,
                   TIDEMARK_INSTANCE_DIR=str(workdir / "instance"), TIDEMARK_JOBS_SYNC="0")
        (workdir / "instance").mkdir()
        sampler = Sampler(database.url)
        sampler.start()
        n = sum(map(len, mails))
        before_children = os.times()
        busy0, total0 = _machine_busy()
        started = time.perf_counter()
        logs = [open(workdir / f"worker-{i}.log", "wb") for i in range(workers)]  # noqa: SIM115 - closed below
        for log in logs:
            procs.append(subprocess.Popen([sys.executable, "-m", "workers.worker", "--burst", *flags], cwd=ROOT, env=env,
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True))
        deadline = time.monotonic() + 300 + n / 5  # a floor of 5 msg/s: only a hang reaches it
        rcs = []
        for proc in procs:
            try:
                rcs.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rcs.append(None)
        wall = time.perf_counter() - started
        busy1, total1 = _machine_busy()
        after_children = os.times()
        sampler.finish()
        for log in logs:
            log.close()

        problems = [f"worker {i + 1} " + ("timed out" if rc is None else f"exited with {rc}")
                    for i, rc in enumerate(rcs) if rc != 0]
        failed = FailedJobRegistry(queue_name, connection=connection).get_job_ids()
        if failed:
            problems.append(f"{len(failed)} fetch job(s) FAILED")
        if len(q):
            problems.append(f"{len(q)} job(s) still queued")
        # From the first job taken to the last one done: the rate of running workers, without
        # the start-up (imports, connections) that a worker pays once, not per mail.
        jobs = [j for j in Job.fetch_many(job_ids, connection=connection) if j is not None]
        span = (max(j.ended_at for j in jobs) - min(j.started_at for j in jobs)).total_seconds() \
            if len(jobs) == len(job_ids) and all(j.started_at and j.ended_at for j in jobs) else None
        # Which worker took which mailbox is read from their logs.
        taken = [len(set(re.findall(r"fetch-mailbox-\d+", (workdir / f"worker-{i}.log").read_text(errors="replace"))))
                 for i in range(workers)]
        engine = create_engine(database.url)
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT mailbox_id, count(*) FROM raw_messages GROUP BY mailbox_id")).all())
            undecided = conn.scalar(text("SELECT count(*) FROM raw_messages WHERE state <> 'decided'"))
            messages = conn.scalar(text("SELECT count(*) FROM messages WHERE direction = 'in'"))
            copies = conn.scalar(text(
                "SELECT count(*) FROM (SELECT raw_message_id FROM messages WHERE raw_message_id IS NOT NULL"
                " GROUP BY raw_message_id HAVING count(*) > 1) AS twice"))
            tickets = conn.scalar(text("SELECT count(*) FROM tickets"))
            numbers = conn.scalar(text("SELECT count(DISTINCT number) FROM tickets"))
        engine.dispose()
        wrong = {mid: stored.get(mid, 0) for mid in mailbox_ids if stored.get(mid, 0) != len(mails[0])}
        if wrong:
            problems.append(f"mailboxes with other than {len(mails[0])} stored messages: {wrong}")
        if undecided:
            problems.append(f"{undecided} stored message(s) not decided")
        if messages != n or copies:
            problems.append(f"{messages} messages for {n} emails, {copies} decided twice")
        if numbers != tickets:
            problems.append(f"{tickets} tickets but {numbers} distinct ticket numbers")
        left = sum(unseen_left(dovecot, user) for user in users)
        if left:
            problems.append(f"{left} message(s) left unseen on the server")
        if problems:
            for i in range(workers):
                tail = (workdir / f"worker-{i}.log").read_text(errors="replace").splitlines()[-10:]
                problems.append(f"worker {i + 1} log tail: " + " | ".join(tail))
        cores = os.cpu_count() or 1
        return {
            "workers": workers, "n": n, "wall_s": wall, "msg_per_s": n / wall, "tickets": tickets,
            "span_s": span, "span_msg_per_s": n / span if span else None,
            "jobs_per_worker": sorted(taken, reverse=True), "problems": problems,
            "worker_cpu_s": (after_children.children_user + after_children.children_system)
            - (before_children.children_user + before_children.children_system),
            "pg_cpu_s": sum(sampler.cpu.values()) if sampler.cpu else None,
            "machine_busy_cores": (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else None,
            "cores": cores, "backend_states": dict(sampler.states),
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if database is not None:
            database.drop()
        for user in users:
            dovecot.reset(user)
        shutil.rmtree(workdir, ignore_errors=True)


def describe(r: dict) -> str:
    states = r["backend_states"]
    sampled = sum(states.values())
    doing = ", ".join(f"{what} {100 * c / sampled:.0f}%" for what, c in sorted(states.items(), key=lambda x: -x[1]))
    pg = f"{r['pg_cpu_s']:.1f}" if r["pg_cpu_s"] is not None else "-"
    busy = f"{r['machine_busy_cores']:.2f}" if r["machine_busy_cores"] is not None else "-"
    return (f"  {r['workers']} worker(s): {r['wall_s']:.1f} s, CPU: workers {r['worker_cpu_s']:.1f} s, "
            f"PostgreSQL backends {pg} s, the machine busy {busy} of {r['cores']} cores (everything on it); "
            f"mailboxes per worker {r['jobs_per_worker']}; backends of the run: {doing or 'not sampled'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mailboxes", type=int, default=20)
    ap.add_argument("--per-mailbox", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated; the first is the base")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for scratch databases (BENCH_DATABASE_URL)")
    ap.add_argument("--reading-process", action="store_true",
                    help="every worker with its reading process (workers.worker --reading-process)")
    args = ap.parse_args(argv)
    flags = ("--reading-process",) if args.reading_process else ()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not SHARED_GEN.exists():
        say(f"== scale-out skipped: the benchmark kit's generator is not at {SHARED_GEN} "
            "(its Message-IDs are what is made unique per mailbox) ==")
        return 0
    if not os.path.exists(DOVECOT):
        say(f"== scale-out skipped: dovecot is not installed at {DOVECOT} ==")
        return 0
    why = pg_unreachable(args.pg_url)
    if why:
        say(f"== scale-out skipped: no PostgreSQL at {make_url(args.pg_url).render_as_string()} ({why}) ==")
        return 0
    raws, _metas, _source = load_messages(args.per_mailbox)
    mails = [per_mailbox(raws, k) for k in range(args.mailboxes)]
    say(f"\n== scale-out: {args.mailboxes} mailboxes of {args.per_mailbox} messages on PostgreSQL, "
        f"{' then '.join(map(str, counts))} worker(s){' with reading processes' if flags else ''} ==")
    scratch = Path(tempfile.mkdtemp(prefix="tmscale-"))
    scratch.chmod(0o755)  # Dovecot's mail and auth processes run as other users
    dovecot = DovecotServer(scratch / "dovecot")
    redis = None
    results = []
    try:
        dovecot.start()
        redis = PrivateRedis(scratch)
        for workers in counts:
            r = run(workers, mails, dovecot, redis.url, args.pg_url, scratch, flags)
            results.append(r)
            span = f"{r['span_msg_per_s']:,.0f}" if r["span_msg_per_s"] else "-"
            say(f"  {workers} worker(s): {r['msg_per_s']:,.0f} msg/s start-up included, {span} msg/s running"
                + ("  !!! PROBLEMS" if r["problems"] else ""))
    finally:
        if redis is not None:
            redis.stop()
        dovecot.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for r in results:
        say(describe(r))
        for problem in r["problems"]:
            say(f"  !!! {r['workers']} worker(s): {problem}")
    base = results[0]
    for r in results[1:]:
        ratio = r["msg_per_s"] / base["msg_per_s"]
        verdict = "target met" if ratio >= TARGET else "BELOW the target"
        running = (f"; running (first job taken to last job done): {r['span_msg_per_s'] / base['span_msg_per_s']:.2f}x"
                   if r["span_msg_per_s"] and base["span_msg_per_s"] else "")
        say(f"scale-out on PostgreSQL, {args.mailboxes} x {args.per_mailbox}: {base['workers']} worker(s) "
            f"{base['msg_per_s']:,.0f} msg/s, {r['workers']} workers {r['msg_per_s']:,.0f} msg/s: "
            f"{ratio:.2f}x ({verdict}: >= {TARGET}x with 2 workers on 2 cores){running}")
    if base["workers"] == 1 and base["machine_busy_cores"]:
        # One worker keeps more than one core busy (itself, PostgreSQL, Dovecot): n workers cannot
        # go faster than the machine's cores allow for that much work per message.
        say(f"  this machine's ceiling: {base['cores']} cores / {base['machine_busy_cores']:.2f} cores busy with one "
            f"worker = {base['cores'] / base['machine_busy_cores']:.2f}x at most")
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

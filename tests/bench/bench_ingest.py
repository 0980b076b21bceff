"""End-to-end ingestion: a real Dovecot mailbox to tickets with ONE worker, next to its limits
(bare IMAP fetch, bare stdlib parsing) and the peer django-helpdesk, in one run on the same mail.

    .venv/bin/python -m tests.bench.bench_ingest [--sizes 2000,10000] [--runs 1]
        [--databases sqlite,postgresql] [--peer | --no-peer] [--lmtp 5000] [--reading-process both|off|on]

Per size: the messages (../shared/bench/gen_mail.py, seed 42, when present) are delivered into a
private Dovecot's Maildir. The limits are measured on that mailbox and those bytes. Then, per
database and run: a fresh database built by the migrations, an MSP, a client and an active IMAP
mailbox; one `workers.fetch.fetch_mailbox` job on a private Redis; `python -m workers.worker
--burst` timed as a subprocess (wall clock, peak RSS of the worker, which runs its jobs itself), without
and with its reading process (--reading-process). Counts
and threading correctness are read back from the database. The peer runs from a copy of the
benchmark kit in $BENCH_WORK (default /tmp/tidemark-bench), with the kit's own scripts.
Then, per database, --lmtp messages pushed over 4 LMTP connections (tests.bench.bench_lmtp): msg/s
and p95 time to 250, beside the IMAP rate of the same run (the size nearest).
Numbers go to stdout and to instance/bench/ingest-<timestamp>.json. Not a pytest test.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet
from imapclient import IMAPClient
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.bench.bench_lmtp import lmtp_run, report_line
from tests.bench.bench_parse import SHARED_GEN, baseline, corpus
from tests.bench.bench_parse import run as timed_parse
from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable
from tests.dovecot import DOVECOT, DovecotServer

ROOT = Path(__file__).resolve().parents[2]
KIT = SHARED_GEN.parent
ADDRESS = "helpdesk@support.example.test"  # the generator's recipient
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
IMAP_BATCH = 500
PARSE_TARGET, PEER_TARGET = 1.0, 10.0  # per worker (issue #19), and against the peer


def say(line: str = "") -> None:
    print(line, flush=True)


# --- messages -------------------------------------------------------------------------------------


def load_messages(n: int) -> tuple[list[bytes], list[dict] | None, str]:
    """(raws, metas, source). The metas drive the threading check; without the kit's
    generator there are none, and bench_parse's fallback corpus supplies the bytes."""
    if not SHARED_GEN.exists():
        raws, source = corpus(n)
        return raws, None, source
    spec = importlib.util.spec_from_file_location("gen_mail", SHARED_GEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = module.generate(n, seed=42)
    return [raw for raw, _ in pairs], [meta for _, meta in pairs], str(SHARED_GEN)


# --- private servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, workdir: Path):
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed (make bench installs it)")
        self.url = f"redis://127.0.0.1:{free_port()}/0"
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        self.proc = subprocess.Popen(
            [server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)], stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                Redis.from_url(self.url).ping()
                return
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.05)
        self.stop()
        raise SystemExit("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def index_mailbox(dovecot: DovecotServer, user) -> int:
    """One read-only SELECT, so that Dovecot indexes the fresh Maildir outside any timing
    (the kit does the same before the peer runs)."""
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as c:
        c.login(user.name, user.password)
        return c.select_folder("INBOX", readonly=True)[b"EXISTS"]


def unseen_left(dovecot: DovecotServer, user) -> int:
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as c:
        c.login(user.name, user.password)
        c.select_folder("INBOX", readonly=True)
        return len(c.search(["UNSEEN"]))


# --- the two limits -------------------------------------------------------------------------------


def imap_limit(dovecot: DovecotServer, user, n: int, runs: int) -> float:
    """Bare imapclient: EXAMINE, then BODY.PEEK[] in batches of 500 (read-only, repeatable)."""
    best = 0.0
    for r in range(runs):
        with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as c:
            c.login(user.name, user.password)
            c.select_folder("INBOX", readonly=True)
            started = time.perf_counter()
            uids = c.search("ALL")
            got = size = 0
            for i in range(0, len(uids), IMAP_BATCH):
                for data in c.fetch(uids[i:i + IMAP_BATCH], ["BODY.PEEK[]"]).values():
                    got += 1
                    size += len(data[b"BODY[]"])
            wall = time.perf_counter() - started
        if got != n:
            say(f"  !! imap fetch got {got} messages, expected {n}")
        rate = got / wall
        best = max(best, rate)
        say(f"  imap fetch run {r + 1}: {rate:,.0f} msg/s ({size / wall / 1e6:,.0f} MB/s)")
    return best


# --- databases ------------------------------------------------------------------------------------


def prepare_database(url: str, dovecot: DovecotServer, user, keys: str, secret: str) -> int:
    """Migrate, then MSP → client → active IMAP mailbox on the private Dovecot. Returns its id."""
    from portal.app import create_app
    from portal.extensions import db
    from portal.services import clients, commit
    from portal.services.mailboxes import save_mailbox

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TIDEMARK_ENCRYPTION_KEY=keys, SECRET_KEY=secret)
    with app.app_context():
        try:
            migrate_quietly()
            msp = clients.create_msp(clients.ClientInput(name="Bench MSP"))
            client = clients.create_client(msp, clients.ClientInput(name="Bench Customer"), None)
            mailbox, _ = save_mailbox(msp, client, {
                "address": ADDRESS, "protocol": "imap", "host": dovecot.host, "port": dovecot.imap_port,
                "security": "none", "username": user.name, "password": user.password, "status": "active",
            }, keys=keys, actor=None)
            commit()
            return mailbox.id
        finally:
            db.session.remove()
            db.engine.dispose()


# --- one Tidemark run -----------------------------------------------------------------------------


def norm_id(value: str | None) -> str | None:
    return value.strip().strip("<>").strip().lower() if value else None


def read_back(url: str, metas: list[dict] | None) -> dict:
    """Counts, and per kind: replies on their root's ticket, roots that opened a ticket, markers kept."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            out = {
                "tickets": conn.scalar(text("SELECT count(*) FROM tickets")),
                "raw_messages": conn.scalar(text("SELECT count(*) FROM raw_messages")),
                "raw_by_state": dict(conn.execute(text(
                    "SELECT state, count(*) FROM raw_messages GROUP BY state")).all()),
                "messages_by_outcome": {str(k): v for k, v in conn.execute(text(
                    "SELECT outcome, count(*) FROM messages WHERE direction = 'in' GROUP BY outcome")).all()},
            }
            rows = conn.execute(text(
                "SELECT message_id, ticket_id, outcome, body_text FROM messages WHERE direction = 'in'")).all()
    finally:
        engine.dispose()
    if metas is None:
        return out
    found = {norm_id(mid): (ticket, outcome, body or "") for mid, ticket, outcome, body in rows if mid}
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for meta in metas:
        c = kinds[meta["kind"]]
        c["total"] += 1
        got = found.get(norm_id(meta["message_id"]))
        if got is None:
            c["missing"] += 1
            continue
        ticket, outcome, body = got
        if meta.get("marker") and meta["marker"] in body:
            c["marker_kept"] += 1
        if meta["kind"].startswith("new_"):
            c["ok" if outcome == "created" and ticket is not None else "wrong"] += 1
            continue
        root = found.get(norm_id(metas[meta["root_index"]]["message_id"]))
        c["ok" if ticket is not None and root is not None and root[0] == ticket else "wrong"] += 1
    out["kinds"] = {k: dict(v) for k, v in sorted(kinds.items())}
    return out


def peak_rss_mb(time_file: Path) -> float | None:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_file.read_text(errors="replace"))
    return int(found.group(1)) / 1024 if found else None


# Without GNU time: a tiny parent that reports its child's peak RSS (the worker's).
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write('Maximum resident set size (kbytes): %d\\n' "
    "% resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def run_worker(env: dict, workdir: Path, timeout: float,
               flags: tuple[str, ...] = ()) -> tuple[int | None, float, float | None, Path]:
    time_file, log_file = workdir / "worker.time", workdir / "worker.log"
    worker = [sys.executable, "-m", "workers.worker", "--burst", *flags]
    if os.access("/usr/bin/time", os.X_OK):
        cmd = ["/usr/bin/time", "-v", "-o", str(time_file), *worker]
    else:
        cmd = [sys.executable, "-c", _RUSAGE_WRAPPER, str(time_file), *worker]
    with open(log_file, "wb") as log:
        started = time.perf_counter()
        # Own session: on a timeout the whole group we started (time, worker) is ended.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        wall = time.perf_counter() - started
    return rc, wall, peak_rss_mb(time_file) if time_file.exists() else None, log_file


def tidemark_run(kind: str, n: int, raws: list[bytes], metas, dovecot: DovecotServer, redis_url: str,
                 pg_url: str, scratch: Path, reading_process: bool = False) -> dict:
    from portal.inbound.health import fetch_options

    workdir = Path(tempfile.mkdtemp(prefix=f"run-{kind}-{n}-", dir=scratch))
    user = dovecot.new_user("bench")
    database = None
    try:
        dovecot.deliver_many(user, raws)
        exists = index_mailbox(dovecot, user)
        keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
        database = ScratchDatabase(kind, workdir, pg_url)
        mailbox_id = prepare_database(database.url, dovecot, user, keys, secret)

        queue_name = f"bench-{uuid.uuid4().hex[:8]}"
        connection = Redis.from_url(redis_url)
        connection.flushdb()
        q = Queue(queue_name, connection=connection)
        # One job for the whole mailbox: the job fetches and decides in batches.
        job = q.enqueue("workers.fetch.fetch_mailbox", mailbox_id, **fetch_options(mailbox_id))

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_"))}
        env.update(TIDEMARK_ENV="development", DATABASE_URL=database.url, REDIS_URL=redis_url,
                   TIDEMARK_QUEUE=queue_name, SECRET_KEY=secret, TIDEMARK_ENCRYPTION_KEY=keys,
                   TIDEMARK_INSTANCE_DIR=str(workdir / "instance"), TIDEMARK_JOBS_SYNC="0")
        (workdir / "instance").mkdir()
        # Generous: a floor of 5 msg/s, so that only a hang hits it.
        rc, wall, rss, log_file = run_worker(env, workdir, timeout=300 + n / 5,
                                             flags=("--reading-process",) if reading_process else ())

        failed = FailedJobRegistry(queue_name, connection=connection)
        problems = []
        if rc != 0:
            problems.append("the worker timed out and was killed" if rc is None else f"the worker exited with {rc}")
        if job.id in failed.get_job_ids():
            job.refresh()
            last = (job.exc_info or "").strip().splitlines()[-1:]
            problems.append("the fetch job FAILED" + (f": {last[0]}" if last else ""))
        if len(q):
            problems.append(f"{len(q)} job(s) still queued")
        result = read_back(database.url, metas)
        result.update(n=n, database=kind, delivered=exists, wall_s=wall, msg_per_s=n / wall, peak_rss_mb=rss,
                      worker_rc=rc)
        result["unseen_left_on_server"] = unseen_left(dovecot, user)
        undecided = result["raw_messages"] - result["raw_by_state"].get("decided", 0)
        if result["raw_messages"] != n:
            problems.append(f"{result['raw_messages']} of {n} messages were fetched")
        if undecided:
            problems.append(f"{undecided} fetched message(s) not decided ({result['raw_by_state']})")
        if result["unseen_left_on_server"]:
            problems.append(f"{result['unseen_left_on_server']} message(s) left unseen on the server")
        result["problems"] = problems
        if problems:
            tail = log_file.read_text(errors="replace").splitlines()[-15:]
            result["worker_log_tail"] = tail
        return result
    finally:
        if database is not None:
            database.drop()
        dovecot.reset(user)
        shutil.rmtree(workdir, ignore_errors=True)


# --- the peer -------------------------------------------------------------------------------------


def run_peer(sizes: list[int], runs: int) -> tuple[dict | None, str]:
    """django-helpdesk get_email through the kit's own scripts, from a copy in $BENCH_WORK."""
    if not (KIT / "bench_dh.py").exists():
        return None, f"peer skipped: the benchmark kit is not at {KIT}"
    work = Path(os.environ.get("BENCH_WORK", "/tmp/tidemark-bench"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(KIT, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    (work / ".work").touch()  # the kit's marker: "this is a work copy"
    say(f"peer: django-helpdesk from the kit copied to {work} (setup.sh may take a few minutes)")
    setup = subprocess.run(["./setup.sh"], cwd=work, capture_output=True, text=True)
    if setup.returncode != 0:
        tail = " | ".join((setup.stdout + setup.stderr).strip().splitlines()[-3:])
        return None, f"peer skipped: the kit's setup.sh failed ({tail})"
    pid_file = work / "run" / "dovecot" / "master.pid"
    already = pid_file.exists() and _alive(pid_file)
    results = work / "results" / "dh.json"
    results.unlink(missing_ok=True)
    # Not a pipe: the daemonised Dovecot inherits the script's output and would hold a pipe open.
    start_log = work / "logs" / "start_dovecot.out"
    start_log.parent.mkdir(exist_ok=True)
    with open(start_log, "wb") as log:
        started = subprocess.run(["./start_dovecot.sh"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    if started.returncode != 0:
        return None, f"peer skipped: the kit's Dovecot did not start (see {start_log})"
    try:
        proc = subprocess.run([str(work / "venv" / "bin" / "python"), "-u", "bench_dh.py",
                               "--sizes", ",".join(map(str, sizes)), "--runs", str(runs)], cwd=work)
    finally:
        if not already:  # stop only the Dovecot we started
            subprocess.run(["./stop_dovecot.sh"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc.returncode != 0 or not results.exists():
        return None, f"peer skipped: bench_dh.py failed (exit {proc.returncode}); see {work}/logs"
    return json.loads(results.read_text()), f"peer: django-helpdesk via {work}"


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


# --- report ---------------------------------------------------------------------------------------


def fmt(value, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def print_report(sizes, labels, limits, tide, peer) -> None:
    say()
    say(f"{'size':>6}  {'worker on':<28} {'tidemark msg/s':>14} {'peak MB':>8} {'parse limit':>11} "
        f"{'ratio':>6} {'imap fetch msg/s':>16} {'django-helpdesk msg/s':>21} {'x peer':>7}")
    for n in sizes:
        peer_rate = peer.get(n, {}).get("msg_per_s") if peer else None
        for label in labels:
            r = tide.get((n, label))
            if r is None:
                continue
            rate = r["msg_per_s"]
            ratio = rate / limits[n]["parse"] if rate and limits[n]["parse"] else None
            x_peer = rate / peer_rate if rate and peer_rate else None
            say(f"{n:>6}  {label:<28} {fmt(rate):>14} {fmt(r['peak_rss_mb']):>8} {fmt(limits[n]['parse']):>11} "
                f"{fmt(ratio, '.2f') + ('x' if ratio else ''):>6} {fmt(limits[n]['imap']):>16} "
                f"{fmt(peer_rate, ',.1f'):>21} "
                f"{fmt(x_peer, '.1f') + ('x' if x_peer else ''):>7}")
    say(f"targets: tidemark >= {PARSE_TARGET:.1f}x the parse limit, >= {PEER_TARGET:.0f}x django-helpdesk. "
        "tidemark = median of runs (wall of one `workers.worker --burst`, startup included); "
        "limits = best of runs; peer = the kit's median. '+ reading process': `workers.worker "
        "--reading-process`, its peak the larger of its two processes.")


def print_details(kind_db: str, r: dict) -> None:
    say(f"  {r['n']} on {kind_db}: {r['wall_s']:.1f}s, tickets {r['tickets']}, raw messages {r['raw_messages']} "
        f"{r['raw_by_state']}, messages by outcome {r['messages_by_outcome']}, "
        f"unseen left on the server {r['unseen_left_on_server']}")
    for kind, c in (r.get("kinds") or {}).items():
        what = "opened a ticket" if kind.startswith("new_") else "on the root's ticket"
        extra = f", missing {c['missing']}" if c.get("missing") else ""
        say(f"    {kind:<12} {c.get('ok', 0):>5}/{c['total']:<5} {what:<21} "
            f"({100 * c.get('ok', 0) / c['total']:5.1f}%){extra}; body marker kept {c.get('marker_kept', 0)}")
    for p in r["problems"]:
        say(f"  !!! NOT DRAINED / FAILED: {p}")
    if r.get("worker_log_tail"):
        say("  worker log tail:\n    " + "\n    ".join(r["worker_log_tail"]))


def summarise(runs: list[dict]) -> dict:
    """Median rate, highest peak, and the first run's counts (every run uses the same mail)."""
    out = dict(runs[0])
    out["msg_per_s"] = statistics.median(r["msg_per_s"] for r in runs)
    peaks = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
    out["peak_rss_mb"] = max(peaks) if peaks else None
    out["problems"] = sorted({p for r in runs for p in r["problems"]})
    out["runs"] = [{k: r[k] for k in ("wall_s", "msg_per_s", "peak_rss_mb", "worker_rc")} for r in runs]
    return out


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,10000", help="mailbox sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=1, help="runs of each measurement")
    ap.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                    help="also run django-helpdesk from the benchmark kit (slow: minutes at 10k)")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for scratch databases (BENCH_DATABASE_URL)")
    ap.add_argument("--lmtp", type=int, default=5000, help="messages pushed over 4 LMTP connections (0: none)")
    ap.add_argument("--reading-process", choices=("both", "off", "on"), default="both",
                    help="the worker without and/or with its reading process (workers.worker --reading-process)")
    args = ap.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    kinds_db = [d.strip() for d in args.databases.split(",") if d.strip()]
    unknown = set(kinds_db) - {"sqlite", "postgresql"}
    if unknown or not sizes or args.runs < 1:
        ap.error(f"bad --databases {sorted(unknown)}" if unknown else "give sizes and runs >= 1")
    if not os.path.exists(DOVECOT):
        say(f"dovecot is not installed at {DOVECOT} (make bench installs dovecot-imapd); nothing measured")
        return 1
    if "postgresql" in kinds_db:
        why = pg_unreachable(args.pg_url)
        if why:
            say(f"== PostgreSQL skipped: none reachable at {make_url(args.pg_url).render_as_string()} ({why}) ==")
            kinds_db.remove("postgresql")

    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.reading_process]
    variants = [(kind, kind + (" + reading process" if with_reading else ""), with_reading)
                for kind in kinds_db for with_reading in modes]
    started = time.perf_counter()
    all_raws, all_metas, source = load_messages(max(*sizes, args.lmtp))  # the first n of any larger set are identical
    say(f"{len(all_raws)} messages, {sum(map(len, all_raws)) / 1e6:.1f} MB from {source} "
        f"({time.perf_counter() - started:.1f}s)"
        + ("" if all_metas else "; no generator manifest, so no threading check"))

    scratch = Path(tempfile.mkdtemp(prefix="tmbench-"))
    scratch.chmod(0o755)  # Dovecot's mail and auth processes run as other users
    limits: dict[int, dict] = {}
    tide: dict[tuple[int, str], dict] = {}
    lmtp: dict[str, dict] = {}
    dovecot = DovecotServer(scratch / "dovecot")
    redis = None
    try:
        dovecot.start()
        redis = PrivateRedis(scratch)
        for n in sizes:
            raws, metas = all_raws[:n], (all_metas[:n] if all_metas else None)
            say(f"\n== {n} messages ==")
            user = dovecot.new_user("limit")
            try:
                dovecot.deliver_many(user, raws)
                index_mailbox(dovecot, user)
                limits[n] = {"imap": imap_limit(dovecot, user, n, args.runs)}
            finally:
                dovecot.reset(user)
            limits[n]["parse"] = timed_parse("stdlib parse", baseline, raws, args.runs)
            for kind, label, with_reading in variants:
                runs = []
                for r in range(args.runs):
                    one = tidemark_run(kind, n, raws, metas, dovecot, redis.url, args.pg_url, scratch,
                                       reading_process=with_reading)
                    say(f"  tidemark {label} run {r + 1}: {one['msg_per_s']:,.1f} msg/s, "
                        f"peak RSS {fmt(one['peak_rss_mb'])} MB" + ("  !!! PROBLEMS" if one["problems"] else ""))
                    runs.append(one)
                tide[(n, label)] = summarise(runs)
                print_details(label, tide[(n, label)])
        if args.lmtp:
            say(f"\n== {args.lmtp} messages pushed over LMTP ==")
            nearest = min(sizes, key=lambda n: abs(n - args.lmtp))
            for kind in kinds_db:
                lmtp[kind] = lmtp_run(kind, all_raws[:args.lmtp], redis.url, args.pg_url, scratch)
                lmtp[kind]["imap_msg_per_s"] = tide.get((nearest, kind), {}).get("msg_per_s")
                say("  " + report_line(lmtp[kind], lmtp[kind]["imap_msg_per_s"]))
                for problem in lmtp[kind]["problems"]:
                    say(f"  !!! LMTP: {problem}")
    finally:
        if redis is not None:
            redis.stop()
        dovecot.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    peer_json, peer_note = (None, "peer skipped: --no-peer")
    if args.peer:
        try:
            peer_json, peer_note = run_peer(sizes, args.runs)
        except Exception as exc:  # noqa: BLE001 - the peer must never sink our own figures
            peer_json, peer_note = None, f"peer skipped: {type(exc).__name__}: {exc}"
    peer = {}
    for n in sizes:
        entry = (peer_json or {}).get(str(n))
        if entry:
            peer[n] = {"msg_per_s": entry["msg_per_s"]["median"], "peak_rss_mb": entry["peak_rss_mb"]["max"],
                       "kinds": entry["runs"][0].get("kinds"), "tickets": entry["runs"][0].get("tickets")}

    say()
    say(peer_note)
    print_report(sizes, [label for _, label, _ in variants], limits, tide, peer)
    if peer:
        for n, p in peer.items():
            threaded = {k: f"{c.get('threaded_ok', 0)}/{c['total']}" for k, c in (p["kinds"] or {}).items()
                        if not k.startswith("new_")}
            say(f"  django-helpdesk {n}: peak {p['peak_rss_mb']:.0f} MB, tickets {p['tickets']}, "
                f"replies on the root's ticket {threaded}")

    say("\nmemory (peak RSS of the worker, must stay flat as the mailbox grows):")
    for _, label, _ in variants:
        peaks = [(n, tide[(n, label)]["peak_rss_mb"]) for n in sizes if (n, label) in tide]
        if peaks and all(p for _, p in peaks):
            ratio = peaks[-1][1] / peaks[0][1]
            say(f"  {label:<28} " + ", ".join(f"{n}: {p:.0f} MB" for n, p in peaks)
                + (f"; {peaks[-1][0]}/{peaks[0][0]} = {ratio:.2f}x" if len(peaks) > 1 else ""))
    for kind, r in lmtp.items():
        say(report_line(r, r["imap_msg_per_s"]))
    failures = [(k, r["problems"]) for k, r in tide.items() if r["problems"]]
    failures += [((r["n"], f"{kind} over LMTP"), r["problems"]) for kind, r in lmtp.items() if r["problems"]]
    for (n, kind), problems in failures:
        say(f"!!! {n} on {kind}: ONE JOB DID NOT DRAIN THE MAILBOX CLEANLY: {'; '.join(problems)}")

    out_dir = ROOT / "instance" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out_dir / f"ingest-{stamp}.json"
    out.write_text(json.dumps({
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "source": source,
        "sizes": sizes, "runs": args.runs, "databases": kinds_db, "reading_process": args.reading_process,
        "peer_note": peer_note,
        "limits": {str(n): v for n, v in limits.items()},
        "tidemark": {f"{n}/{kind}": r for (n, kind), r in tide.items()},
        "peer": {str(n): v for n, v in peer.items()},
        "lmtp": lmtp,
    }, indent=2, default=str))
    say(f"\nwrote {out.relative_to(ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The portal under load while mail comes in: two gunicorn workers on PostgreSQL with a large MSP,
technicians listing, opening, searching and replying, and one worker fetching from Dovecot.

    .venv/bin/python -m tests.soak.load [--tickets 100000] [--technicians 50] [--seconds 60]
        [--mail 5000] [--think 1.0] [--pg-url URL]

In one run, on a scratch PostgreSQL database (dropped afterwards), a private Redis, a private
Dovecot and a local SMTP server (the gateway the replies go out through):
1. an MSP of --tickets tickets (five messages each) seeded in the database (tests.soak.seeding)
   and --technicians technicians; an active IMAP mailbox on Dovecot;
2. quiet: --mail messages delivered, one fetch job and `python -m workers.worker --burst`; the
   ingestion rate is messages / (from the worker's start until the last is decided);
3. under load: --mail more messages, the same worker again, and at the same moment the portal
   under gunicorn (workers.stack's command, 2 workers) with every technician signed in (the form,
   its CSRF token, a session cookie) going round: the list (sometimes filtered), a ticket page,
   a search, now and then a reply (a real form POST with the CSRF token), each after a pause of
   --think seconds on average. The load lasts --seconds, and longer if the ingestion has not
   ended by then.
It prints requests per second and p50/p95/p99 per kind of page, errors (anything but the page or
the reply's redirect, and every refused connection: must be 0), and the two ingestion rates.
Exits 1 on any error or when mail was lost. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from argparse import Namespace
from collections import defaultdict
from pathlib import Path

import requests
from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.bench.bench_ingest import PrivateRedis, free_port, index_mailbox, load_messages, run_worker, unseen_left
from tests.bench.bench_portal import COMMON, PASSWORD, RARE_WORD, build_database, percentile, say
from tests.bench.scratch import ScratchDatabase, pg_unreachable
from tests.dovecot import DOVECOT, DovecotServer
from tests.smtp import SmtpServer
from tests.soak.seeding import seed_bulk

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADDRESS = "helpdesk@support.example.test"  # the recipient of bench_ingest's generated mail
KINDS = ("list", "filtered list", "ticket page", "search", "reply")
WEIGHTS = (30, 15, 30, 15, 10)
TOKEN = re.compile(r'"X-CSRFToken": "([^"]+)"')
FORM_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


# --- the world ------------------------------------------------------------------------------------


def prepare(url: str, args, dovecot: DovecotServer, user, smtp: SmtpServer, keys: str, secret: str) -> dict:
    """Migrations, the seeded MSP with its technicians, the IMAP mailbox and the gateway."""
    from portal.app import create_app
    from portal.extensions import db
    from portal.models import Client
    from portal.outbound import servers
    from portal.services import commit
    from portal.services.mailboxes import save_mailbox

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url, TIDEMARK_ENCRYPTION_KEY=keys, SECRET_KEY=secret)
    with app.app_context():
        try:
            seeder = functools.partial(seed_bulk, technicians=args.technicians)
            world = build_database(app, "postgresql", args.tickets, 5 * args.tickets, random.Random(42), seeder)
            msp = db.session.get(Client, world["msp_id"])
            mailbox, _ = save_mailbox(msp, msp, {
                "address": ADDRESS, "protocol": "imap", "host": dovecot.host, "port": dovecot.imap_port,
                "security": "none", "username": user.name, "password": user.password, "status": "active",
            }, keys=keys, actor=None)
            servers.save_smtp_server({"host": smtp.host, "port": smtp.port, "security": "none", "timeout": 30,
                                      "verify_tls": True}, keys=keys)
            commit()
            world["mailbox_id"] = mailbox.id
            return world
        finally:
            db.session.remove()
            db.engine.dispose()


def decided(engine, mailbox_id: int) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM raw_messages WHERE mailbox_id = :m AND state = 'decided'"),
                           {"m": mailbox_id})


def ingest(raws: list[bytes], world: dict, dovecot, user, engine, env: dict, workdir: Path, already: int) -> dict:
    """Deliver the mail, queue one fetch, start a burst worker in a thread; return at once with
    what the caller waits on (the `done` event is set when every message is decided)."""
    from portal.inbound.health import fetch_options

    dovecot.deliver_many(user, raws)
    index_mailbox(dovecot, user)
    q = Queue(env["TIDEMARK_QUEUE"], connection=Redis.from_url(env["REDIS_URL"]))
    q.enqueue("workers.fetch.fetch_mailbox", world["mailbox_id"], **fetch_options(world["mailbox_id"]))
    state = {"started": time.perf_counter(), "done": threading.Event(), "worker": None}
    target = already + len(raws)

    def work():
        state["worker"] = run_worker(env, workdir, timeout=600 + len(raws) / 2)

    def watch():
        while decided(engine, world["mailbox_id"]) < target:
            if state["worker"] is not None:  # the worker ended without deciding everything
                break
            time.sleep(0.25)
        state["ended"] = time.perf_counter()
        state["done"].set()

    state["threads"] = [threading.Thread(target=work, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in state["threads"]:
        t.start()
    return state


def finish(state: dict, n: int) -> dict:
    for t in state["threads"]:
        t.join()
    rc = state["worker"][0]
    wall = state["ended"] - state["started"]
    return {"rate": n / wall, "wall": wall, "worker_rc": rc, "peak_rss_mb": state["worker"][2]}


# --- the technicians ------------------------------------------------------------------------------


class Technician:
    """One signed-in person with a session of their own, going round the pages."""

    def __init__(self, base: str, email: str, n_tickets: int, rng: random.Random, customers: list[int]):
        self.base, self.email, self.rng = base, email, rng
        self.n_tickets, self.customers = n_tickets, customers
        self.http = requests.Session()
        self.token = None
        self.retried = False

    def sign_in(self) -> None:
        page = self.http.get(f"{self.base}/sign-in", timeout=60)
        token = FORM_TOKEN.search(page.text).group(1)
        resp = self.http.post(f"{self.base}/sign-in", data={"email": self.email, "password": PASSWORD,
                                                             "csrf_token": token}, allow_redirects=False, timeout=60)
        if resp.status_code != 302:
            raise SystemExit(f"{self.email} could not sign in: {resp.status_code}")

    def one(self) -> tuple[str, float, str | None]:
        """One action: (kind, milliseconds, problem or None)."""
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        ticket = f"T-{self.rng.randint(1, self.n_tickets)}"
        if kind == "list":
            method, path, data, wanted = "GET", "/tickets", None, 200
        elif kind == "filtered list":
            parts = [f"client={self.rng.choice(self.customers)}", "status=open", "new=1", "sort=created",
                     f"priority={self.rng.choice(('low', 'high'))}"]
            method, path, data, wanted = "GET", "/tickets?" + "&".join(self.rng.sample(parts, 2)), None, 200
        elif kind == "ticket page":
            method, path, data, wanted = "GET", f"/tickets/{ticket}", None, 200
        elif kind == "search":
            word = RARE_WORD if self.rng.random() < 0.2 else self.rng.choice(COMMON[16:40])
            method, path, data, wanted = "GET", f"/tickets?q={word}", None, 200
        else:
            if self.token is None:
                self.token = TOKEN.search(self.http.get(f"{self.base}/tickets/{ticket}", timeout=60).text).group(1)
            data = {"csrf_token": self.token, "to": "someone@customer.example", "cc": "", "set_status": "",
                    "text": f"Checked it from here, {self.rng.randint(1, 10**6)}: please try again.",
                    "html": "", "signature": "The desk", "from_address": ""}
            method, path, wanted = "POST", f"/tickets/{ticket}/reply", 303
        began = time.perf_counter()
        self.retried = False
        for attempt in (1, 2):
            try:
                resp = self.http.request(method, self.base + path, data=data, allow_redirects=False, timeout=60)
                resp.content  # noqa: B018 - the whole page, as a browser reads it
                problem = None if resp.status_code == wanted else f"{method} {path}: {resp.status_code}"
                break
            except requests.ConnectionError as exc:
                problem = f"{method} {path}: {type(exc).__name__}: {exc}"
                # A kept-alive connection the server closed as the request went out: a browser sends
                # a GET again on a new one, once (counted apart); a POST is an error.
                if method != "GET" or attempt == 2:
                    break
                self.retried = True
            except requests.RequestException as exc:
                problem = f"{method} {path}: {type(exc).__name__}: {exc}"
                break
        return kind, (time.perf_counter() - began) * 1000, problem


def technicians_run(techs: list[Technician], until, think: float) -> tuple[dict, list[str], dict, float]:
    """Every technician in a thread of its own until until() says stop. Returns the times per
    kind, the problems, the GETs sent again per kind and the seconds it lasted."""
    times: dict[str, list[float]] = defaultdict(list)
    problems: list[str] = []
    retries: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def go(tech: Technician):
        time.sleep(tech.rng.uniform(0, think))  # not all at the same moment
        while not until():
            kind, ms, problem = tech.one()
            with lock:
                times[kind].append(ms)
                retries[kind] += tech.retried
                if problem:
                    problems.append(problem)
            time.sleep(tech.rng.uniform(0.5 * think, 1.5 * think))

    began = time.perf_counter()
    threads = [threading.Thread(target=go, args=(t,), daemon=True) for t in techs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, problems, retries, time.perf_counter() - began


# --- the run --------------------------------------------------------------------------------------


def start_portal(env: dict, port: int, log: Path) -> subprocess.Popen:
    from workers.stack import web_command

    cmd = web_command(Namespace(bind=f"127.0.0.1:{port}", web_workers=2, web_threads=16))
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/sign-in", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn stopped at start-up; see {log}")
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer; see {log}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=100_000, help="tickets seeded (five messages each)")
    ap.add_argument("--technicians", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60, help="the load lasts at least this long")
    ap.add_argument("--mail", type=int, default=5000, help="messages ingested quietly, then as many under load")
    ap.add_argument("--think", type=float, default=1.0, help="a technician's average pause between actions (s)")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for the scratch database (BENCH_DATABASE_URL)")
    args = ap.parse_args(argv)
    why = pg_unreachable(args.pg_url)
    if why:
        say(f"PostgreSQL is needed: none reachable at {make_url(args.pg_url).render_as_string()} ({why})")
        return 1
    if not os.path.exists(DOVECOT):
        say(f"dovecot is not installed at {DOVECOT}; nothing measured")
        return 1

    raws, _metas, source = load_messages(2 * args.mail)
    say(f"{len(raws):,} messages from {source}")
    scratch = Path(tempfile.mkdtemp(prefix="tmload-"))
    scratch.chmod(0o755)  # Dovecot's processes run as other users
    dovecot, redis, smtp, database, portal, engine = DovecotServer(scratch / "dovecot"), None, None, None, None, None
    try:
        dovecot.start()
        redis = PrivateRedis(scratch)
        smtp = SmtpServer(scratch / "smtp").start()
        smtp.keep = False
        user = dovecot.new_user("load")
        keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
        database = ScratchDatabase("postgresql", scratch, args.pg_url)
        say(f"== seeding {args.tickets:,} tickets, {5 * args.tickets:,} messages, {args.technicians} technicians ==")
        world = prepare(database.url, args, dovecot, user, smtp, keys, secret)
        engine = create_engine(database.url, pool_size=2)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_"))}
        env.update(TIDEMARK_ENV="production", DATABASE_URL=database.url, REDIS_URL=redis.url,
                   TIDEMARK_QUEUE=f"load-{uuid.uuid4().hex[:8]}", SECRET_KEY=secret, TIDEMARK_ENCRYPTION_KEY=keys,
                   TIDEMARK_INSTANCE_DIR=str(scratch / "instance"), TIDEMARK_JOBS_SYNC="0",
                   TIDEMARK_COOKIE_SECURE="0", TIDEMARK_PORTAL_URL="http://127.0.0.1")
        (scratch / "instance").mkdir()

        say(f"== quiet: {args.mail:,} messages ==")
        quiet_dir = scratch / "quiet"
        quiet_dir.mkdir()
        state = ingest(raws[:args.mail], world, dovecot, user, engine, env, quiet_dir, 0)
        quiet = finish(state, args.mail)
        say(f"  {quiet['rate']:,.1f} msg/s ({quiet['wall']:.1f} s)")

        port = free_port()
        portal = start_portal(env, port, scratch / "gunicorn.log")
        base = f"http://127.0.0.1:{port}"
        rng = random.Random(7)
        techs = [Technician(base, email, args.tickets, random.Random(rng.random()), world["customers"])
                 for email in world["tech_emails"]]
        for t in techs:
            t.sign_in()
        say(f"== under load: {args.mail:,} messages, {len(techs)} technicians signed in ==")
        load_dir = scratch / "load"
        load_dir.mkdir()
        state = ingest(raws[args.mail:2 * args.mail], world, dovecot, user, engine, env, load_dir, args.mail)
        began = time.perf_counter()
        times, problems, retries, lasted = technicians_run(
            techs, lambda: time.perf_counter() - began >= args.seconds and state["done"].is_set(), args.think)
        loaded = finish(state, args.mail)

        with engine.connect() as conn:
            stored = conn.scalar(text("SELECT count(*) FROM raw_messages WHERE mailbox_id = :m"),
                                 {"m": world["mailbox_id"]})
            replies = conn.scalar(text(
                "SELECT count(*) FROM messages WHERE direction = 'out' AND author_id IS NOT NULL"))
        left, sent = unseen_left(dovecot, user), smtp.count
    finally:
        if portal is not None:
            os.killpg(portal.pid, 15)
            portal.wait(timeout=30)
        log = scratch / "gunicorn.log"
        gunicorn_trouble = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                            if re.search(r"\[(CRITICAL|ERROR|WARNING)\]|Traceback", line)]
        if engine is not None:
            engine.dispose()
        if database is not None:
            database.drop()
        if smtp is not None:
            smtp.stop()
        if redis is not None:
            redis.stop()
        dovecot.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    total = sum(len(v) for v in times.values())
    say()
    say(f"Portal under load: 2 gunicorn workers on PostgreSQL, {args.tickets:,} tickets / {5 * args.tickets:,} "
        f"messages, {len(techs)} technicians (pause {args.think:g} s on average), {lasted:.0f} s, "
        f"while one worker ingests {args.mail:,} messages from Dovecot")
    say(f"{'page':<14} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>7} {'again':>6}")
    for kind in (*KINDS, "all"):
        ms = [m for v in times.values() for m in v] if kind == "all" else times.get(kind, [])
        if not ms:
            continue
        errs = len(problems) if kind == "all" else sum(1 for p in problems if _kind_of(p) == kind)
        say(f"{kind:<14} {len(ms):>9,} {len(ms) / lasted:>7.1f} {statistics.median(ms):>8.1f} "
            f"{percentile(ms, 95):>8.1f} {percentile(ms, 99):>8.1f} {max(ms):>8.1f} {errs:>7} "
            f"{sum(retries.values()) if kind == 'all' else retries.get(kind, 0):>6}")
    ratio = loaded["rate"] / quiet["rate"]
    say(f"ingestion of {args.mail:,} messages by one worker: quiet {quiet['rate']:,.1f} msg/s, "
        f"under this load {loaded['rate']:,.1f} msg/s ({ratio:.2f} of quiet)")
    say(f"mail: {stored:,} of {2 * args.mail:,} stored, {left} left unseen on the server; "
        f"{replies:,} replies written by the technicians, {sent:,} mails received by the SMTP server; "
        f"{total:,} requests in all")
    say("again: GETs sent a second time after the server closed a kept-alive connection as they went out "
        "(as a browser does); errors: anything else, and a second failure")
    for p in problems[:10]:
        say(f"  !!! {p}")
    for line in gunicorn_trouble[:10]:
        say(f"  gunicorn: {line}")
    lost = stored != 2 * args.mail or left
    if lost:
        say("!!! NOT EVERY MESSAGE WAS STORED")
    return 1 if problems or lost else 0


def _kind_of(problem: str) -> str:
    method, path = problem.split(" ", 2)[:2]
    if method == "POST":
        return "reply"
    if path.startswith("/tickets?q="):
        return "search"
    if path.startswith("/tickets?"):
        return "filtered list"
    return "list" if path.rstrip(":") == "/tickets" else "ticket page"


if __name__ == "__main__":
    sys.exit(main())

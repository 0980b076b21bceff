"""Faults survived, on real servers: an IMAP mailbox (a private Dovecot) and a Graph mailbox (the
local Graph server) go through the real worker processes (`python -m workers.worker`, `python -m
workers.cron`) on PostgreSQL while this run breaks things, one fault a round:

    python -m tests.soak.faults [--messages 2000] [--graph-messages 200] [--only NAME,...]
        [--ticket-share 0.15] [--refuse-seconds 25] [--lock-seconds 60] [--seed 1] [--pg-url URL] [--list]

Each round gets a fresh IMAP mailbox of --messages and a Graph mailbox of --graph-messages (a
--ticket-share of them open tickets, the rest reply to them; every ticket is acknowledged, through
the SMTP gateway (aiosmtpd) for the IMAP mailbox and through sendMail for the Graph one). This is
the supervisor, as systemd would be: a worker that dies is started again at once, without the
fault hook. The workers reach PostgreSQL through a gate on loopback (tests.soak.servers) that can
refuse connections; the machine's PostgreSQL keeps running.

A round is healthy when every message on the servers is stored and decided, the servers were
told (seen, read), both mailboxes' last poll succeeded, and every acknowledgement went out.
Printed per round: messages on the servers, tickets, messages stored, duplicates (a Message-ID
stored twice), lost (on a server, stored nowhere), acknowledgements sent twice, the seconds from
the end of the fault until healthy, and tracebacks the worker and the cron printed meanwhile.
Exit status 1 when any lost, doubled, sent-twice or traceback count is not 0, or a round did
not heal. Not a pytest test (tests/soak/test_faults_quick.py runs its quickest form)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from email import message_from_bytes
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from portal.inbound.fetch import BATCH_SIZE
from portal.inbound.health import fetch_options
from portal.outbound.deliver import FOUND_SENT_NOTE
from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable
from tests.dovecot import DOVECOT, DovecotServer, children_of
from tests.graph_server import running_graph_server
from tests.mailfactory import email
from tests.smtp import running_smtp_server
from tests.soak.servers import DatabaseGate, PrivateRedis

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TOKEN = "soak-graph-token"
POLL_SECONDS = 10  # the shortest poll interval a mailbox may have
TRACEBACK = "Traceback (most recent call last)"


def say(line: str = "") -> None:
    print(line, flush=True)


# Set by Ctrl-C or SIGTERM: every wait of the run ends, and everything it started is stopped.
STOP = threading.Event()


def pause(seconds: float) -> None:
    if STOP.wait(seconds):
        raise KeyboardInterrupt


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause(step)
    return True


# --- the mail of a round ----------------------------------------------------------------------------


def round_mail(tag: str, n: int, to: str, rng: random.Random, share: float) -> tuple[list[bytes], list[str], set[str]]:
    """n mails to `to`: a share of them open a ticket, each from a sender of its own; the others
    reply to an earlier one, by References only, from its sender. Returns the mails, their
    Message-IDs and the Message-IDs that open tickets."""
    mails, ids, roots, senders = [], [], [], {}
    for i in range(n):
        mid = f"<{tag}-{i}@soak.example>"
        if i == 0 or rng.random() < share:
            sender = f"{tag}-{i}@contoso.com"
            senders[mid] = sender
            roots.append(mid)
            mails.append(email(sender=sender, to=(to,), subject=f"case {tag}-{i}", message_id=mid,
                               body=f"Case {i} of round {tag}.\n" + "The printer is on fire again. " * 20))
        else:
            root = rng.choice(roots)
            mails.append(email(sender=senders[root], to=(to,), subject=f"Re: case {root}", message_id=mid,
                               references=[root], body=f"More on {root}.\n" + "Still burning. " * 15))
        ids.append(mid)
    return mails, ids, set(roots)


@dataclass
class Round:
    name: str
    tag: str
    imap_address: str
    graph_address: str
    mailbox_ids: list[int] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    roots: set[str] = field(default_factory=set)
    fault_ended: float | None = None
    began: float = 0.0
    healthy_after: float | None = None
    seen_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row: dict = field(default_factory=dict)


# --- everything a run starts ------------------------------------------------------------------------


class Rig:
    """The servers, the database behind its gate, the processes and their supervisor."""

    def __init__(self, args, scratch: Path):
        self.args, self.scratch = args, scratch
        self.logs = scratch / "logs"
        self.logs.mkdir()
        self.keys, self.secret = Fernet.generate_key().decode(), uuid.uuid4().hex
        self.queue_name = f"soak-{uuid.uuid4().hex[:8]}"
        self.stack = contextlib.ExitStack()
        self.workers: list[subprocess.Popen] = []
        self.cron: subprocess.Popen | None = None
        self.deaths: list[tuple[float, int, str]] = []  # (when, pid, its fault hook)
        self._armed: dict[int, str] = {}
        self._supervising = threading.Event()
        self._log_number = 0
        self._lock = threading.Lock()

    # life cycle

    def start(self) -> None:
        self.dovecot = DovecotServer(self.scratch / "dovecot")
        self.dovecot.start()
        self.stack.callback(self.dovecot.stop)
        self.redis = PrivateRedis(self.scratch).start()
        self.stack.callback(self.redis.stop)
        self.smtp = self.stack.enter_context(running_smtp_server())
        self.smtp.keep = True
        self.graph = self.stack.enter_context(running_graph_server())
        self.graph.tokens.add(TOKEN)
        self.database = ScratchDatabase("postgresql", self.scratch, self.args.pg_url, prefix="tidemark_soak")
        self.stack.callback(self.database.drop)
        url = make_url(self.database.url)
        self.gate = DatabaseGate((url.host or "127.0.0.1", url.port or 5432))
        self.stack.callback(self.gate.close)
        self.gated_url = url.set(host="127.0.0.1", port=self.gate.port).render_as_string(hide_password=False)
        self.engine = create_engine(self.database.url, isolation_level="AUTOCOMMIT")
        self.stack.callback(self.engine.dispose)
        self._prepare_database()
        self.cron = self._spawn("workers.cron", {})
        self._supervising.set()
        self.supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self.supervisor.start()

    def stop(self) -> None:
        self._supervising.clear()
        with self._lock:
            procs = [*self.workers, *([self.cron] if self.cron else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_family(proc)
        self.stack.close()

    def app(self):
        from portal.app import create_app

        return create_app("testing", SQLALCHEMY_DATABASE_URI=self.database.url, TIDEMARK_ENCRYPTION_KEY=self.keys,
                          SECRET_KEY=self.secret, REDIS_URL=self.redis.url, TIDEMARK_QUEUE=self.queue_name,
                          TIDEMARK_JOBS_SYNC=False)

    def _prepare_database(self) -> None:
        from portal.extensions import db
        from portal.outbound import servers
        from portal.services import clients, commit

        app = self.app()
        with app.app_context():
            migrate_quietly()
            msp = clients.create_msp(clients.ClientInput(name="Soak MSP"))
            clients.create_client(msp, clients.ClientInput(name="Contoso", allow=["contoso.com"]), None)
            servers.save_smtp_server({"host": "127.0.0.1", "port": self.smtp.port, "security": "none",
                                      "from": "support@soak.example"}, keys=self.keys)
            commit()
            self.msp_id = msp.id
            db.session.remove()
            db.engine.dispose()

    # the processes

    def env(self, fault: str | None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_", "DATABASE_URL", "REDIS_URL"))}
        env.update(TIDEMARK_ENV="development", DATABASE_URL=self.gated_url, REDIS_URL=self.redis.url,
                   TIDEMARK_QUEUE=self.queue_name, SECRET_KEY=self.secret, TIDEMARK_ENCRYPTION_KEY=self.keys,
                   TIDEMARK_CA_FILE=self.dovecot.ca_file, TIDEMARK_INSTANCE_DIR=str(self.scratch / "instance"),
                   TIDEMARK_LOCK_SECONDS=str(self.args.lock_seconds), TIDEMARK_MAIL_HOST="soak.example",
                   PYTHONUNBUFFERED="1")
        if fault:
            env["TIDEMARK_FAULT_AT"] = fault
        return env

    def _spawn(self, module: str, env_extra: dict, fault: str | None = None) -> subprocess.Popen:
        self._log_number += 1
        log = open(self.logs / f"{self._log_number:03d}-{module}.log", "wb")  # noqa: SIM115 - the child's
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env(fault), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # a Ctrl-C reaches this process, which stops them in order
        log.close()
        if fault:
            self._armed[proc.pid] = fault
        return proc

    def set_workers(self, count: int, fault: str | None = None) -> None:
        """Exactly `count` workers from now on (the first with the fault hook armed)."""
        with self._lock:
            old, self.workers = self.workers, []
        for proc in old:
            if proc.poll() is None:
                proc.terminate()
        for proc in old:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill_family(proc)
        with self._lock:
            self.workers = [self._spawn("workers.worker", {}, fault if i == 0 else None) for i in range(count)]

    def kill_family(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker's children (RQ's scheduler), then the worker, as `kill -9` of the service would."""
        for pid in [*children_of(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def kill_a_worker(self) -> None:
        with self._lock:
            alive = [p for p in self.workers if p.poll() is None]
        if alive:
            self.kill_family(alive[0])

    def _supervise(self) -> None:
        """Start a dead worker (or the cron) again at once, without the fault hook."""
        while self._supervising.is_set():
            with self._lock:
                for i, proc in enumerate(self.workers):
                    if proc.poll() is not None:
                        self.deaths.append((time.monotonic(), proc.pid, self._armed.pop(proc.pid, "")))
                        for pid in children_of(proc.pid):  # a child left behind, if any
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                        self.workers[i] = self._spawn("workers.worker", {})
                if self.cron is not None and self.cron.poll() is not None:
                    self.deaths.append((time.monotonic(), self.cron.pid, "cron"))
                    self.cron = self._spawn("workers.cron", {})
            time.sleep(0.1)

    def tracebacks(self) -> tuple[int, list[str]]:
        """Tracebacks printed by every worker and cron so far, and the last lines of each."""
        count, tails = 0, []
        for path in sorted(self.logs.iterdir()):
            lines = path.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if TRACEBACK in line:
                    count += 1
                    end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j].startswith(" ")), i)
                    tails.append(f"{path.name}: {lines[max(i - 1, 0)][:160]} … {lines[end][:200]}")
        return count, tails

    # reading what happened

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    def stored(self, mailbox_id: int) -> int:
        return self.scalar("SELECT count(*) FROM raw_messages WHERE mailbox_id = :m", m=mailbox_id)

    def acks_received(self, ids: set[str]) -> Counter:
        """In-Reply-To of every acknowledgement the SMTP server and sendMail took, among `ids`."""
        got: Counter = Counter()
        with self.smtp.lock:
            raws = [r.data for r in self.smtp.messages]
        with self.graph.lock:
            raws += [raw for _user, raw in self.graph.sent]
        for raw in raws:
            answered = (message_from_bytes(raw).get("In-Reply-To") or "").strip()
            if answered in ids:
                got[answered] += 1
        return got


# --- a round --------------------------------------------------------------------------------------


def prepare_round(rig: Rig, name: str, number: int, rng: random.Random) -> Round:
    from portal.extensions import db
    from portal.models import Client
    from portal.services import commit
    from portal.services import mailbox_oauth as oauth_svc
    from portal.services.mailboxes import save_mailbox

    tag = f"r{number}"
    rnd = Round(name, tag, f"imap-{tag}@acme.example", f"graph-{tag}@acme.example")
    user = rig.dovecot.new_user(f"soak{number}-")
    mails, ids, roots = round_mail(f"{tag}i", rig.args.messages, rnd.imap_address, rng, rig.args.ticket_share)
    rig.dovecot.deliver_many(user, mails)
    rnd.message_ids += ids
    rnd.roots |= roots
    rig.graph.add_mailbox(rnd.graph_address)
    if rig.args.graph_messages:
        mails, ids, roots = round_mail(f"{tag}g", rig.args.graph_messages, rnd.graph_address, rng, rig.args.ticket_share)
        for raw in mails:
            rig.graph.deliver(rnd.graph_address, raw)
        rnd.message_ids += ids
        rnd.roots |= roots
    app = rig.app()
    with app.app_context():
        msp = db.session.get(Client, rig.msp_id)
        imap, _ = save_mailbox(msp, msp, {
            "address": rnd.imap_address, "protocol": "imap", "host": "127.0.0.1", "port": rig.dovecot.imap_port,
            "security": "none", "username": user.name, "password": user.password, "status": "active",
            "poll_interval": POLL_SECONDS}, keys=rig.keys, actor=None)
        graph, _ = save_mailbox(msp, msp, {
            "address": rnd.graph_address, "protocol": "graph", "auth": "oauth2", "host": "", "username": "",
            "password": None, "api_url": rig.graph.api_url, "poll_interval": POLL_SECONDS,
            "oauth": {"provider": "microsoft", "flow": "app", "tenant": "contoso.onmicrosoft.com",
                      "client_id": "app-1", "client_secret": "s3cret"}}, keys=rig.keys, actor=None)
        oauth_svc.store_grant(graph.oauth, rig.keys, access_token=TOKEN,
                              access_expires_at=dt.datetime.now(timezone.utc) + timedelta(days=3650))
        graph.status = "active"
        for box in (imap, graph):
            box.poll_interval = POLL_SECONDS
        commit()
        rnd.mailbox_ids = [imap.id, graph.id]
        db.session.remove()
        db.engine.dispose()
    # The round's first fetches start now rather than at the cron's next tick; recovering from
    # the fault is the cron's and the workers' own work.
    q = Queue(rig.queue_name, connection=Redis.from_url(rig.redis.url))
    for mailbox_id in rnd.mailbox_ids:
        q.enqueue("workers.fetch.fetch_mailbox", mailbox_id, **fetch_options(mailbox_id))
    rnd.began = time.monotonic()
    return rnd


def unhealthy(rig: Rig, rnd: Round) -> str | None:
    """Why the round is not healthy yet, or None."""
    ids = rnd.mailbox_ids
    on_server = rig.args.messages + rig.args.graph_messages
    # What the mailboxes' health says meanwhile, in the words a person reads on their pages.
    errors = [e for (e,) in rig.rows("SELECT last_error FROM mailboxes WHERE id IN (:a, :b)", a=ids[0], b=ids[1]) if e]
    for error in errors:
        if error not in rnd.seen_errors:
            rnd.seen_errors.append(error)
    stored = rig.scalar("SELECT count(*) FROM raw_messages WHERE mailbox_id IN (:a, :b)", a=ids[0], b=ids[1])
    if stored < on_server:
        return f"{stored} of {on_server} stored"
    open_work = rig.scalar("SELECT count(*) FROM raw_messages WHERE mailbox_id IN (:a, :b)"
                           " AND (state <> 'decided' OR NOT server_done)", a=ids[0], b=ids[1])
    if open_work:
        return f"{open_work} stored message(s) not decided or not told to the server"
    if errors or rig.scalar("SELECT count(*) FROM mailboxes WHERE id IN (:a, :b) AND last_success_at IS NULL",
                            a=ids[0], b=ids[1]):
        return "a mailbox's last poll did not succeed: " + "; ".join(errors)
    # "uncertain": the worker died while the server was taking it, so it is not sent again; a
    # person sees it on its ticket. Settled, but only healthy if it did arrive (below).
    unsent = rig.scalar("SELECT count(*) FROM messages WHERE direction = 'out' AND mailbox_id IN (:a, :b)"
                        " AND (delivery IS NULL OR delivery NOT IN ('sent', 'uncertain'))", a=ids[0], b=ids[1])
    tickets = rig.scalar("SELECT count(*) FROM tickets WHERE mailbox_id IN (:a, :b)", a=ids[0], b=ids[1])
    sent = len(rig.acks_received(rnd.roots))
    if unsent or sent < tickets:
        return f"{sent} of {tickets} acknowledgements sent ({unsent} waiting in the outbox)"
    return None


def settle(rig: Rig, rnd: Round, timeout: float) -> None:
    """Wait until the round is healthy; the seconds from the fault's end go in its row."""
    deadline = time.monotonic() + timeout
    why = unhealthy(rig, rnd)
    while why is not None:
        if time.monotonic() > deadline:
            rnd.notes.append(f"NOT HEALED within {timeout:.0f} s: {why}")
            return
        pause(0.5)
        why = unhealthy(rig, rnd)
    rnd.healthy_after = time.monotonic() - (rnd.fault_ended or rnd.began)


def count_round(rig: Rig, rnd: Round, tracebacks: int) -> dict:
    ids = rnd.mailbox_ids
    stored_ids = [mid for (mid,) in rig.rows(
        "SELECT message_id FROM messages WHERE direction = 'in' AND mailbox_id IN (:a, :b)", a=ids[0], b=ids[1])]
    per_id = Counter(stored_ids)
    acks = rig.acks_received(rnd.roots)
    uncertain = rig.scalar("SELECT count(*) FROM messages WHERE direction = 'out' AND delivery = 'uncertain'"
                           " AND mailbox_id IN (:a, :b)", a=ids[0], b=ids[1])
    if uncertain:
        rnd.notes.append(f"{uncertain} acknowledgement(s) marked uncertain, not sent again (see the ticket)")
    found_sent = rig.scalar("SELECT count(*) FROM messages WHERE direction = 'out' AND delivery_note = :note"
                            " AND mailbox_id IN (:a, :b)", note=FOUND_SENT_NOTE, a=ids[0], b=ids[1])
    if found_sent:
        rnd.notes.append(f"{found_sent} acknowledgement(s) of the Graph mailbox found in its Sent Items after the "
                         "kill, marked sent, not sent again")
    return {
        "fault": rnd.name,
        "on server": len(rnd.message_ids),
        "tickets": rig.scalar("SELECT count(*) FROM tickets WHERE mailbox_id IN (:a, :b)", a=ids[0], b=ids[1]),
        "stored": rig.scalar("SELECT count(*) FROM raw_messages WHERE mailbox_id IN (:a, :b)", a=ids[0], b=ids[1]),
        "duplicates": sum(c - 1 for c in per_id.values() if c > 1),
        "lost": len(set(rnd.message_ids) - set(per_id)),
        "acks sent": len(acks),
        "sent twice": sum(c - 1 for c in acks.values() if c > 1),
        "healthy after s": None if rnd.healthy_after is None else round(rnd.healthy_after, 1),
        "tracebacks": tracebacks,
    }


# --- the faults -----------------------------------------------------------------------------------
# Each takes the rig, the round and the run's random numbers; it returns once the fault is over.


def mid_fetch(rig: Rig, rnd: Round, share: float = 0.3, timeout: float = 180) -> bool:
    """Wait until the IMAP mailbox's fetch is under way (a share of it stored)."""
    want = max(1, int(rig.args.messages * share))
    return wait_until(lambda: rig.stored(rnd.mailbox_ids[0]) >= want, timeout, step=0.02)


def mid_send(rig: Rig, rnd: Round, count: int = 10, timeout: float = 300) -> bool:
    want = min(count, max(1, len(rnd.roots) // 10))
    return wait_until(lambda: len(rig.acks_received(rnd.roots)) >= want, timeout, step=0.05)


def hook(step: str) -> Callable:
    def fault(rig: Rig, rnd: Round, rng: random.Random) -> float | None:
        def died() -> float | None:
            return next((when for when, _pid, spec in rig.deaths if spec.startswith(step)), None)

        def over() -> bool:
            return died() is not None or (time.monotonic() - rnd.began > 30 and unhealthy(rig, rnd) is None)
        wait_until(over, 300, step=0.2)
        if died() is None:
            rnd.notes.append(f"the worker never reached {step}: no fault was made")
        return died()  # the fault ends when the worker dies
    return fault


def armed(spec: str, args) -> str:
    """The hook's n-th time, no more than one job reaches the step in a round of this size."""
    step, _, nth = spec.partition(":")
    batches = -(-args.messages // BATCH_SIZE)
    if step == "after-sendmail":
        most = max(1, int(args.graph_messages * args.ticket_share) // 2)
    elif step.endswith("-send"):
        most = max(1, int(args.messages * args.ticket_share) // 2)
    else:
        most = batches
    return f"{step}:{min(int(nth or 1), most)}"


def random_kills(rig: Rig, rnd: Round, rng: random.Random) -> None:
    mid_fetch(rig, rnd, share=0.05)
    for _ in range(5):
        pause(rng.uniform(0.3, 4.0))
        rig.kill_a_worker()


def redis_restart(rig: Rig, rnd: Round, rng: random.Random) -> None:
    mid_fetch(rig, rnd)
    rig.redis.stop()
    pause(2)
    rig.redis.start()  # empty: every queued job, lock and the scheduler's state are gone


def database_refuses(when: Callable) -> Callable:
    def fault(rig: Rig, rnd: Round, rng: random.Random) -> None:
        if not when(rig, rnd):
            rnd.notes.append("the moment for the fault never came")
        rig.gate.refuse()
        pause(rig.args.refuse_seconds)
        rig.gate.open()
    return fault


def dovecot_killed(rig: Rig, rnd: Round, rng: random.Random) -> None:
    mid_fetch(rig, rnd)
    rig.dovecot.kill()
    pause(2)
    rig.dovecot.restart()


def smtp_refuses(rig: Rig, rnd: Round, rng: random.Random) -> None:
    mid_send(rig, rnd)
    rig.smtp.mail_reply = "421 4.3.2 Service shutting down, try again later"
    pause(8)
    rig.smtp.mail_reply = "451 4.3.0 Temporary local problem, try again later"
    pause(8)
    rig.smtp.mail_reply = None


def smtp_drops(rig: Rig, rnd: Round, rng: random.Random) -> None:
    mid_send(rig, rnd)
    rig.smtp.drop_after_data = 10
    if not wait_until(lambda: rig.smtp.drop_after_data == 0, 120):
        rnd.notes.append(f"only {10 - rig.smtp.drop_after_data} of 10 connections were dropped")
        rig.smtp.drop_after_data = 0


def racing(rig: Rig, rnd: Round, rng: random.Random) -> None:
    """The workers race on the same mailboxes: a fetch job per worker and mailbox and a sending run
    per worker are queued again and again, and the Redis locks that keep them apart are taken
    away (as Redis restarts would), until everything is stored: only the database keeps order."""
    from portal.inbound.health import fetch_lock
    from portal.jobs import LOCK_PREFIX

    q = Queue(rig.queue_name, connection=Redis.from_url(rig.redis.url))
    total = rig.args.messages + rig.args.graph_messages
    ids = rnd.mailbox_ids

    def all_stored() -> bool:
        return rig.scalar("SELECT count(*) FROM raw_messages WHERE mailbox_id IN (:a, :b) AND state = 'decided'",
                          a=ids[0], b=ids[1]) >= total

    deadline = time.monotonic() + 300
    while not all_stored() and time.monotonic() < deadline:
        if len(q) < 2 * len(rig.workers):
            for mailbox_id in ids:
                q.enqueue("workers.fetch.fetch_mailbox", mailbox_id, job_id=f"race-{uuid.uuid4().hex[:10]}",
                          result_ttl=0, failure_ttl=300)
            q.enqueue("workers.sending.send_due", job_id=f"race-{uuid.uuid4().hex[:10]}", result_ttl=0,
                      failure_ttl=300)
        q.connection.delete(*[LOCK_PREFIX + fetch_lock(i) for i in ids], LOCK_PREFIX + "send-outbox")
        pause(0.2)


@dataclass
class Fault:
    name: str
    make: Callable[[Rig, Round, random.Random], float | None]  # returns when the fault ended (None: now)
    workers: int = 1
    hook: str | None = None  # the worker starts with TIDEMARK_FAULT_AT set to this


FAULTS = [
    Fault("worker SIGKILL x5 at random", random_kills),
    Fault("SIGKILL after fetch", hook("after-fetch"), hook="after-fetch:2"),
    Fault("SIGKILL after commit", hook("after-commit"), hook="after-commit:3"),
    Fault("SIGKILL before server action", hook("before-server-action"), hook="before-server-action:2"),
    Fault("SIGKILL mid-decide", hook("mid-decide"), hook="mid-decide:2"),
    Fault("SIGKILL mid-send", hook("mid-send"), hook="mid-send:5"),
    Fault("SIGKILL after the server's 250", hook("after-send"), hook="after-send:5"),
    Fault("SIGKILL after Graph's sendMail", hook("after-sendmail"), hook="after-sendmail:3"),
    Fault("Redis restart mid-fetch", redis_restart),
    Fault("PostgreSQL refuses mid-fetch", database_refuses(mid_fetch)),
    Fault("PostgreSQL refuses mid-send", database_refuses(mid_send)),
    Fault("Dovecot killed mid-fetch", dovecot_killed),
    Fault("SMTP 421 then 451", smtp_refuses),
    Fault("SMTP drops after DATA", smtp_drops),
    Fault("two workers racing", racing, workers=2),
    Fault("three workers racing", racing, workers=3),
]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_round(rig: Rig, fault: Fault, number: int, rng: random.Random) -> Round:
    rig.deaths.clear()
    rig.set_workers(fault.workers, armed(fault.hook, rig.args) if fault.hook else None)
    before, _ = rig.tracebacks()
    rnd = prepare_round(rig, fault.name, number, rng)
    ended = None
    try:
        ended = fault.make(rig, rnd, rng)
    except Exception as exc:  # noqa: BLE001 - the harness's own failure, told in the table
        rnd.notes.append(f"the fault could not be made: {type(exc).__name__}: {exc}")
    rnd.fault_ended = ended or time.monotonic()
    settle(rig, rnd, rig.args.heal_timeout)
    total, tails = rig.tracebacks()
    rnd.row = count_round(rig, rnd, total - before)
    rnd.notes += tails[before:]
    # Done with: its polls would only crowd the next rounds' work.
    with rig.engine.connect() as conn:
        conn.execute(text("UPDATE mailboxes SET status = 'disabled' WHERE id IN (:a, :b)"),
                     {"a": rnd.mailbox_ids[0], "b": rnd.mailbox_ids[1]})
    return rnd


# --- the table ------------------------------------------------------------------------------------

COLUMNS = ["fault", "on server", "tickets", "stored", "duplicates", "lost", "acks sent", "sent twice",
           "healthy after s", "tracebacks"]


def table(rows: list[dict]) -> str:
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "-")) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) if c == "fault" else c.rjust(widths[c]) for c in COLUMNS)]
    for r in rows:
        lines.append("  ".join(str(r[c] if r[c] is not None else "-").ljust(widths[c]) if c == "fault"
                               else str(r[c] if r[c] is not None else "-").rjust(widths[c]) for c in COLUMNS))
    return "\n".join(lines)


def failed(rnd: Round) -> list[str]:
    r = rnd.row
    bad = [f"{c} {r[c]}" for c in ("duplicates", "lost", "sent twice", "tracebacks") if r[c]]
    if r["stored"] != r["on server"]:
        bad.append(f"stored {r['stored']} of {r['on server']}")
    if rnd.healthy_after is None:
        bad.append("did not heal")
    bad += [n for n in rnd.notes if n.startswith(("the worker never", "the fault could not", "the moment"))]
    return bad


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000, help="messages in each round's IMAP mailbox")
    ap.add_argument("--graph-messages", type=int, default=200, help="messages in each round's Graph mailbox")
    ap.add_argument("--ticket-share", type=float, default=0.15,
                    help="the share of messages that open a ticket (and get an acknowledgement); the rest reply")
    ap.add_argument("--only", default="", help="comma-separated fault names or parts of them (--list shows them)")
    ap.add_argument("--list", action="store_true", help="list the faults and stop")
    ap.add_argument("--refuse-seconds", type=float, default=25.0, help="how long PostgreSQL refuses connections")
    ap.add_argument("--lock-seconds", type=int, default=60,
                    help="TIDEMARK_LOCK_SECONDS of the workers: how soon a dead worker's mailbox is free again")
    ap.add_argument("--heal-timeout", type=float, default=600.0, help="seconds a round may take to heal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg-url", default=os.environ.get("SOAK_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for a scratch database (SOAK_DATABASE_URL)")
    args = ap.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    args.faults = [f for f in FAULTS if not wanted or any(w in slug(f.name) for w in wanted)]
    if not args.faults:
        ap.error(f"no fault matches --only {args.only!r} (see --list)")
    return args


def cannot_run(args) -> str | None:
    if not os.path.exists(DOVECOT):
        return f"dovecot is not installed at {DOVECOT} (make soak installs it)"
    why = pg_unreachable(args.pg_url)
    if why:
        return f"PostgreSQL is not reachable at {make_url(args.pg_url).render_as_string()} ({why})"
    return None


def run(args) -> list[Round]:
    """Every chosen fault, a round each, told line by line as it goes."""
    rng = random.Random(args.seed)
    before = {}
    if threading.current_thread() is threading.main_thread():
        before = {sig: signal.signal(sig, lambda *_: STOP.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    STOP.clear()
    scratch = Path(tempfile.mkdtemp(prefix="tmsoak-"))
    scratch.chmod(0o755)  # Dovecot's mail and auth processes run as other users
    say(f"faults survived: {len(args.faults)} round(s), each {args.messages} IMAP + {args.graph_messages} Graph "
        f"messages, PostgreSQL refusing for {args.refuse_seconds:.0f} s, lock ttl {args.lock_seconds} s "
        f"({dt.datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    rig = Rig(args, scratch)
    rounds: list[Round] = []
    started = time.monotonic()
    try:
        rig.start()
        say(f"  servers, database and processes up in {time.monotonic() - started:.1f} s")
        for number, fault in enumerate(args.faults, 1):
            rnd = run_round(rig, fault, number, rng)
            rounds.append(rnd)
            r = rnd.row
            say(f"  {fault.name}: {r['stored']}/{r['on server']} stored, {r['tickets']} tickets, healthy after "
                f"{r['healthy after s'] if r['healthy after s'] is not None else '-'} s, round "
                f"{time.monotonic() - rnd.began:.0f} s" + ("" if not failed(rnd) else "  !!! " + "; ".join(failed(rnd))))
            for error in rnd.seen_errors:
                say(f"    the mailbox said: {error}")
            for note in rnd.notes:
                say(f"    {note}")
    finally:
        rig.stop()
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if os.environ.get("SOAK_KEEP"):
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    say(f"  {time.monotonic() - started:.0f} s in all")
    return rounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for fault in FAULTS:
            say(slug(fault.name))
        return 0
    why = cannot_run(args)
    if why:
        say(f"{why}; nothing was run")
        return 2
    rounds = run(args)
    say()
    say(table([r.row for r in rounds]))
    say("healthy after s: from the end of the fault (the kill, the restart, the database accepting again) until "
        "every message is stored, decided and told to its server, both polls succeed and every acknowledgement "
        "went out.")
    bad = [(r.name, failed(r)) for r in rounds if failed(r)]
    for name, problems in bad:
        say(f"!!! {name}: {'; '.join(problems)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""LMTP delivery: messages pushed by a client over several connections to `python -m workers.lmtp`,
as an MTA would; run from bench_ingest so that its figure sits beside the IMAP ingestion rate of
the same run (same mail, same machine, same moment).

Per database: a fresh database, an MSP, a client and an active LMTP mailbox; the listener as a
subprocess (jobs on a private Redis, no worker running meanwhile). `connections` threads each
open one LMTP connection and push their share of the messages one transaction at a time (MAIL,
RCPT, DATA), timing each from MAIL to its 250. Then one `workers.worker --burst` decides what was
stored, for the rate from the first push to the last ticket. Not a pytest test.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from tests.bench.scratch import ScratchDatabase, migrate_quietly

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "helpdesk@support.example.test"


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, keys: str, secret: str) -> int:
    """Migrate, then MSP → client → active LMTP mailbox. Returns its id."""
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
            mailbox, _ = save_mailbox(msp, client, {"address": ADDRESS, "protocol": "lmtp", "status": "active"},
                                      keys=keys, actor=None)
            commit()
            return mailbox.id
        finally:
            db.session.remove()
            db.engine.dispose()


def _push(port: int, raws: list[bytes], waits: list[float], errors: list[str]) -> None:
    lmtp = smtplib.LMTP("127.0.0.1", port, timeout=120)
    try:
        for raw in raws:
            started = time.perf_counter()
            try:
                refused = lmtp.sendmail("mta@relay.example", [ADDRESS], raw)
            except smtplib.SMTPException as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            waits.append(time.perf_counter() - started)
            if refused:
                errors.append(str(refused)[:200])
        lmtp.quit()
    finally:
        lmtp.close()


def _count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def lmtp_run(kind: str, raws: list[bytes], redis_url: str, pg_url: str, scratch: Path, *,
             connections: int = 4) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"lmtp-{kind}-", dir=scratch))
    database = ScratchDatabase(kind, workdir, pg_url)
    listener = None
    try:
        keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
        prepare(database.url, keys, secret)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "TEST_"))}
        env.update(TIDEMARK_ENV="development", DATABASE_URL=database.url, REDIS_URL=redis_url,
                   TIDEMARK_QUEUE=f"bench-{uuid.uuid4().hex[:8]}", SECRET_KEY=secret, TIDEMARK_ENCRYPTION_KEY=keys,
                   TIDEMARK_INSTANCE_DIR=str(workdir / "instance"), TIDEMARK_JOBS_SYNC="0")
        (workdir / "instance").mkdir()
        log_file = open(workdir / "lmtp.log", "wb")  # noqa: SIM115 - closed in finally
        listener = subprocess.Popen([sys.executable, "-m", "workers.lmtp", "--listen", f"127.0.0.1:{port}"],
                                    cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                smtplib.LMTP("127.0.0.1", port, timeout=5).close()
                break
            except OSError:
                if listener.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the LMTP listener did not start") from None
                time.sleep(0.1)

        shares = [raws[i::connections] for i in range(connections)]
        waits: list[list[float]] = [[] for _ in shares]
        errors: list[str] = []
        threads = [threading.Thread(target=_push, args=(port, share, waits[i], errors)) for i, share in enumerate(shares)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        push_s = time.perf_counter() - started
        all_waits = sorted(w for ws in waits for w in ws)
        stored = _count(database.url, "SELECT count(*) FROM raw_messages")

        decide_started = time.perf_counter()
        worker = subprocess.run([sys.executable, "-m", "workers.worker", "--burst"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600 + len(raws) / 5)
        decide_s = time.perf_counter() - decide_started
        decided = _count(database.url, "SELECT count(*) FROM raw_messages WHERE state = 'decided'")
        tickets = _count(database.url, "SELECT count(*) FROM tickets")
        problems = list(dict.fromkeys(errors))[:5]
        if len(all_waits) != len(raws):
            problems.append(f"{len(raws) - len(all_waits)} of {len(raws)} messages got no 250")
        if stored != len(all_waits):
            problems.append(f"{stored} stored for {len(all_waits)} 250s")
        if decided != stored:
            problems.append(f"{stored - decided} stored message(s) not decided (worker rc {worker.returncode})")
        return {"database": kind, "n": len(raws), "connections": connections, "push_s": push_s,
                "msg_per_s": len(all_waits) / push_s if push_s else None,
                "p50_ms": 1000 * statistics.median(all_waits) if all_waits else None,
                "p95_ms": 1000 * all_waits[int(0.95 * (len(all_waits) - 1))] if all_waits else None,
                "decide_s": decide_s, "end_to_end_msg_per_s": len(raws) / (push_s + decide_s),
                "stored": stored, "decided": decided, "tickets": tickets, "problems": problems}
    finally:
        if listener is not None and listener.poll() is None:
            listener.send_signal(signal.SIGTERM)
            try:
                listener.wait(timeout=60)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait()
        database.drop()
        shutil.rmtree(workdir, ignore_errors=True)


def report_line(r: dict, imap_rate: float | None) -> str:
    beside = f"IMAP ingestion of the same run {imap_rate:,.0f} msg/s" if imap_rate else "no IMAP figure in this run"
    verdict = ""
    if imap_rate and r.get("msg_per_s"):
        verdict = " (target met)" if r["msg_per_s"] >= imap_rate else " (BELOW the IMAP rate)"
    return (f"LMTP {r['n']} messages over {r['connections']} connections on {r['database']}: "
            f"{r['msg_per_s']:,.0f} msg/s to 250{verdict}, time to 250 p50 {r['p50_ms']:.1f} ms, p95 "
            f"{r['p95_ms']:.1f} ms; decided afterwards by one worker in {r['decide_s']:.1f} s "
            f"({r['end_to_end_msg_per_s']:,.0f} msg/s push to ticket); {beside}")

"""Alert rules against plain ingestion, in one run (issue #18): 10,000 alert mails for 200 keys,
each key's problems repeated and then recovered, into one ticket per key, next to 10,000 plain
mails of the same shape through a route without an alert rule.

    .venv/bin/python -m tests.bench.bench_alerts [--mails 10000] [--keys 200] [--runs 1]
        [--databases sqlite,postgresql]

Per database and run: a fresh database built by the migrations, an MSP, a client and a mailbox
whose route has the rule (or, for the plain run, none). The mail is stored as a fetch stores it
(not timed), then decided by the ingest's own Decider in its batches and committed (timed). The
target is an alert rate of at least 80% of the plain rate. Not a pytest test.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable

ADDRESS = "alerts@bench.example"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET = 0.8
RULE = {"key": {"from": "header", "header": "X-Alert-Key"}, "state": {"from": "header", "header": "X-Alert-State"},
        "problem": ["CRITICAL"], "recovery": ["OK"]}


def say(line: str = "") -> None:
    print(line, flush=True)


def mails(n: int, keys: int, seed: int = 7) -> list[bytes]:
    """n mails in rounds over the keys in shuffled order; each key's last mail is its recovery."""
    rng = random.Random(seed)
    names = [f"client{k % 17}/srv{k:03d}/{rng.choice(['disk-c', 'cpu', 'ping', 'backup', 'memory'])}"
             for k in range(keys)]
    rounds = n // keys
    out = []
    start = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    for r in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            state = "OK" if r == rounds - 1 else "CRITICAL"
            msg = EmailMessage()
            msg["From"] = "rmm@monitoring.example"
            msg["To"] = ADDRESS
            msg["Subject"] = f"{name} is {state}"
            msg["Message-ID"] = make_msgid(domain="monitoring.example")
            msg["Date"] = format_datetime(start + timedelta(seconds=len(out)))
            msg["X-Alert-Key"], msg["X-Alert-State"] = name, state
            msg.set_content(f"Check {name} reports {state} at round {r}.\nValue: {rng.randint(0, 100)}%\n")
            out.append(msg.as_bytes())
    return out


def one_run(kind: str, raws: list[bytes], rule: dict | None, pg_url: str, scratch: Path) -> dict:
    from portal.app import create_app
    from portal.extensions import db
    from portal.inbound.fetch import decide_pending, store_raw_batch
    from portal.services import clients, commit
    from portal.services.mailboxes import save_mailbox
    from portal.services.routes import RouteInput

    database = ScratchDatabase(kind, scratch, pg_url)
    keys, secret = Fernet.generate_key().decode(), uuid.uuid4().hex
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=database.url, TIDEMARK_ENCRYPTION_KEY=keys,
                     SECRET_KEY=secret, TIDEMARK_JOBS_SYNC=False)
    try:
        with app.app_context():
            migrate_quietly()
            msp = clients.create_msp(clients.ClientInput(name="Bench MSP"))
            customer = clients.create_client(msp, clients.ClientInput(name="Bench Customer"), None)
            mailbox, _ = save_mailbox(msp, customer, {
                "address": ADDRESS, "host": "127.0.0.1", "username": "bench", "password": "bench",
                "acknowledge": False}, keys=keys, actor=None, routes=[
                RouteInput(name="Monitoring", client=customer, recipients=[ADDRESS], alert_rule=rule),
                RouteInput(name="Everything else", client=msp, fallback=True)])
            commit()
            fetched = [SimpleNamespace(raw=raw, server_id=str(i), size=len(raw)) for i, raw in enumerate(raws)]
            store_raw_batch(mailbox, fetched, folder="INBOX")
            commit()
            started = time.perf_counter()
            report = decide_pending(mailbox, secret.encode(), commit)
            wall = time.perf_counter() - started
        engine = create_engine(database.url)
        with engine.connect() as conn:
            tickets = conn.scalar(text("SELECT count(*) FROM tickets"))
            resolved = conn.scalar(text("SELECT count(*) FROM tickets WHERE status = 'resolved'"))
            flapping = conn.scalar(text("SELECT count(*) FROM tickets WHERE alert_flapping"))
        engine.dispose()
        return {"rate": len(raws) / wall, "wall": wall, "tickets": tickets, "resolved": resolved,
                "flapping": flapping, "decided": report.decided, "failed": report.failed}
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        database.drop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=10_000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--databases", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    args = ap.parse_args()
    kinds = [d.strip() for d in args.databases.split(",") if d.strip()]
    if "postgresql" in kinds and (why := pg_unreachable(args.pg_url)):
        say(f"== PostgreSQL skipped: none reachable at {make_url(args.pg_url).render_as_string()} ({why}) ==")
        kinds.remove("postgresql")
    raws = mails(args.mails, args.keys)
    say(f"\n== alert rules: {len(raws):,} alert mails for {args.keys} keys with recoveries, "
        f"against {len(raws):,} plain mails ==")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="tmbench-alerts-") as scratch:
        for kind in kinds:
            plain = alert = None
            for _ in range(args.runs):  # the best of each, alternating, so that both see the same machine
                p = one_run(kind, raws, None, args.pg_url, Path(scratch))
                a = one_run(kind, raws, RULE, args.pg_url, Path(scratch))
                plain = p if plain is None or p["rate"] > plain["rate"] else plain
                alert = a if alert is None or a["rate"] > alert["rate"] else alert
            ratio = alert["rate"] / plain["rate"]
            ok = ratio >= TARGET and alert["tickets"] <= args.keys and not alert["failed"]
            failures += not ok
            say(f"  {kind:<10} plain {plain['rate']:,.0f} msg/s ({plain['tickets']:,} tickets); "
                f"alerts {alert['rate']:,.0f} msg/s ({alert['tickets']:,} tickets, {alert['resolved']:,} resolved, "
                f"{alert['flapping']:,} flapping); ratio {ratio:.2f} (target >= {TARGET:.2f})"
                + ("" if ok else "  !!! BELOW TARGET"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

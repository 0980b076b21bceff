"""The ticket list and the ticket page at scale: response times through the real views.

    .venv/bin/python -m tests.bench.bench_portal [--tickets 100000] [--messages 500000]
        [--requests 200] [--databases sqlite,postgresql] [--pg-url URL]

Per database (a fresh SQLite file, and a scratch PostgreSQL database that is dropped again;
PostgreSQL is skipped with a message when none answers): the migrations, then an MSP with
clients, mailboxes, technicians and contacts, and the tickets and messages written with Core
executemany in chunks (the full-text search objects of migration 0005 are dropped for the load
and built again after it, as the migration's backfill does). Then a signed-in Flask test client
asks each kind of page --requests times (real views, templates and queries) and the table shows
p50 / p95 / max in milliseconds. The goal: p95 under 100 ms. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from tests.bench.scratch import ScratchDatabase, migrate_quietly, pg_unreachable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHUNK = 5000
PASSWORD = "bench horse battery staple"
TARGET_MS = 100

# Words of support mail, most frequent first; the tail is made of generated rare words.
COMMON = ("the to and a of is it on in we for this not you with our can please printer error "
          "thanks email server after when from have be are login password user network laptop "
          "again since today issue still working outlook vpn update screen office teams phone "
          "restart access shared drive folder file backup license install new account reset "
          "slow cannot open send receive invoice client meeting calendar monitor keyboard "
          "mouse wifi connection firewall disk space windows mac citrix sharepoint onedrive").split()
RARE_WORD = "quetzalcoatl"  # in a handful of messages only
SUBJECTS = ("Printer not working", "Cannot log in to {app}", "{app} is slow", "New starter: {name}",
            "Password reset for {name}", "VPN drops every few minutes", "Shared drive missing",
            "Invoice question", "Laptop will not start", "Email bounced from {app}", "Backup failed",
            "Request: install {app}", "Teams calls cut out", "Monitor flickers", "Wi-Fi in meeting room")
APPS = ("Outlook", "Teams", "SharePoint", "Citrix", "Xero", "Sage", "OneDrive", "Chrome", "Zoom")
NAMES = ("Alice", "Bob", "Chen", "Dana", "Eve", "Farid", "Greta", "Hiro", "Ines", "Jon")


def say(line: str = "") -> None:
    print(line, flush=True)


def search_migration():
    """Migration 0005's statements, to drop the search objects for the load and build them after."""
    path = ROOT / "migrations" / "versions" / "0005_ticket_search.py"
    spec = importlib.util.spec_from_file_location("tidemark_migration_0005", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Text:
    """Bodies and subjects with a Zipf-like word frequency, from a fixed seed."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz"
        tail = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 10))) for _ in range(20000)]
        self.words = COMMON + tail
        weights = [1 / (rank + 1) ** 1.05 for rank in range(len(self.words))]
        total, acc = sum(weights), 0.0
        self.cum = []
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def body(self) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(30, 140))
        lines, size = [], 12
        for start in range(0, len(words), size):
            sentence = " ".join(words[start:start + size])
            lines.append(sentence[:1].upper() + sentence[1:] + ".")
        return "Hello,\n\n" + "\n".join(lines) + "\n\nKind regards"

    def subject(self) -> str:
        return self.rng.choice(SUBJECTS).format(app=self.rng.choice(APPS), name=self.rng.choice(NAMES))


N_CUSTOMERS, N_CONTACTS = 25, 3000
# To do is a quarter of the tickets, as on a desk that closes its work (percent of the tickets).
STATUS_SHARES = (("new", 4), ("open", 12), ("waiting", 9), ("resolved", 15), ("closed", 50), ("archived", 10))


def seed_world(app, technicians: int = 8) -> dict:
    """The MSP through the services: customers, mailboxes, technicians (who sign in with
    PASSWORD) and contacts, the n-th contact belonging to customer n % N_CUSTOMERS."""
    from portal.extensions import db
    from portal.models import Contact
    from portal.services import clients, commit, users
    from portal.services.mailboxes import save_mailbox

    msp = clients.create_msp(clients.ClientInput(name="Bench MSP"))
    customers = [clients.create_client(msp, clients.ClientInput(name=f"Customer {i:02d}"), None)
                 for i in range(N_CUSTOMERS)]
    boxes = [save_mailbox(msp, msp, {"address": f"desk{i}@bench.example", "host": "127.0.0.1",
                                     "username": f"desk{i}", "password": "pw"},
                          keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None)[0] for i in range(3)]
    techs = [users.create_user(msp, f"tech{i}@bench.example", PASSWORD, "technician", None) for i in range(technicians)]
    commit()
    now = datetime.now(timezone.utc)
    contacts = [{"msp_id": msp.id, "client_id": customers[i % N_CUSTOMERS].id,
                 "email": f"user{i}@customer{i % N_CUSTOMERS}.example", "name": f"User {i}", "created_at": now}
                for i in range(N_CONTACTS)]
    db.session.execute(insert(Contact), contacts)
    commit()
    return {"msp_id": msp.id, "customers": [c.id for c in customers], "techs": [t.id for t in techs],
            "tech_email": techs[0].email, "tech_emails": [t.email for t in techs], "boxes": [b.id for b in boxes],
            "contacts": list(db.session.scalars(text("SELECT id FROM contacts ORDER BY id")))}


def seed(app, kind: str, n_tickets: int, n_messages: int, rng: random.Random) -> dict:
    """The MSP and its world through the services; tickets and messages with Core in chunks."""
    from portal.extensions import db
    from portal.models import Message, Ticket
    from portal.services import commit

    world = seed_world(app)
    msp_id, customers, contact_ids = world["msp_id"], world["customers"], world["contacts"]
    now = datetime.now(timezone.utc)
    session = db.session
    texts = Text(rng)
    statuses = [status for status, share in STATUS_SHARES for _ in range(share)]
    per_ticket = [1] * n_tickets
    for _ in range(n_messages - n_tickets):
        per_ticket[rng.randrange(n_tickets)] += 1
    start = now - timedelta(days=3 * 365)
    span = (now - start).total_seconds()
    rare_left = 12
    message_id, ticket_id = 1, 1
    for chunk_start in range(0, n_tickets, CHUNK):
        ticket_rows, message_rows = [], []
        for number in range(chunk_start + 1, min(n_tickets, chunk_start + CHUNK) + 1):
            created = start + timedelta(seconds=span * (number - 1) / n_tickets)
            contact = rng.choice(contact_ids)
            count = per_ticket[number - 1]
            updated = created + timedelta(minutes=rng.randint(0, 60 * 24 * 14))
            ticket_rows.append({
                "id": ticket_id, "msp_id": msp_id, "number": number, "reference": f"T-{number}",
                "uuid": uuid.UUID(int=rng.getrandbits(128)).hex, "mailbox_id": rng.choice(world["boxes"]),
                "client_id": customers[contact % len(customers)], "contact_id": contact,
                "subject": texts.subject(), "status": rng.choice(statuses),
                "priority": rng.choices(("low", "normal", "high"), (2, 7, 1))[0],
                "assignee_id": rng.choice([None, *world["techs"]]), "new_information": rng.random() < 0.2,
                "cc": [], "created_at": created, "updated_at": min(updated, now)})
            for k in range(count):
                body = texts.body()
                if rare_left and rng.random() < 0.0005:
                    body += f"\nThe {RARE_WORD} adapter is back."
                    rare_left -= 1
                message_rows.append({
                    "id": message_id, "msp_id": msp_id, "mailbox_id": ticket_rows[-1]["mailbox_id"],
                    "ticket_id": ticket_id, "direction": "in" if k % 2 == 0 else "out",
                    "outcome": "created" if k == 0 else None,
                    "message_id": f"<{message_id}.bench@customer.example>", "from_address": f"user{contact}@x.example",
                    "subject": ticket_rows[-1]["subject"], "body_text": body, "full_text": "",
                    "created_at": created + timedelta(minutes=10 * k), "references": [], "to": [], "cc": [],
                    "trace": [], "details": {}})
                message_id += 1
            ticket_id += 1
        conn = session.connection()
        for table, rows in ((Ticket.__table__, ticket_rows), (Message.__table__, message_rows)):
            conn.execute(insert(table), rows)  # Core executemany: the driver's own batching
        commit()
    if kind == "postgresql":  # the rows came with their ids: move the sequences past them
        for table in ("tickets", "messages"):
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
        commit()
    return world


def sign_in(client, email: str) -> None:
    import re

    page = client.get("/sign-in").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    resp = client.post("/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302, resp.status_code


def settle(client, urls: dict[str, list[str]]) -> None:
    """Warm the caches once, then freeze what is loaded for the garbage collector, as wsgi.py
    does in the portal's process."""
    import gc

    measure(client, ["/tickets"] * 5 + urls["ticket page, random ticket"][:5])
    gc.freeze()


def measure(client, urls: list[str]) -> list[float]:
    from flask import g

    times = []
    for url in urls:
        for name in list(g):  # each request gets a fresh `g`, as in production
            g.pop(name)
        began = time.perf_counter()
        resp = client.get(url)
        body = resp.get_data()
        times.append((time.perf_counter() - began) * 1000)
        assert resp.status_code == 200, (url, resp.status_code, body[:300])
    return times


def build_database(app, kind: str, n_tickets: int, n_messages: int, rng: random.Random, seeder=None) -> dict:
    """Migrations, then the seeder's MSP, tickets and messages with the search objects of
    migration 0005 dropped for the load and built after it, then fresh statistics. In the app's
    context; returns the seeder's world."""
    from portal.extensions import db

    migration = search_migration()
    migrate_quietly()
    up, down = ((migration.SQLITE_UP, migration.SQLITE_DOWN) if kind == "sqlite"
                else (migration.POSTGRES_UP, migration.POSTGRES_DOWN))
    with db.engine.begin() as conn:
        for statement in down:
            conn.execute(text(statement))
    began = time.perf_counter()
    world = (seeder or seed)(app, kind, n_tickets, n_messages, rng)
    seeded = time.perf_counter() - began
    began = time.perf_counter()
    with db.engine.begin() as conn:
        if kind == "postgresql":  # the GIN index over every body: give the build room
            conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        for statement in up:
            conn.execute(text(statement))
    indexed = time.perf_counter() - began
    if kind == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    say(f"  seeded {n_tickets:,} tickets and {n_messages:,} messages in {seeded:.0f}s; "
        f"search index built in {indexed:.0f}s")
    return world


def page_urls(world: dict, n_tickets: int, n: int, rng: random.Random) -> dict[str, list[str]]:
    """n addresses of each kind of page the benchmark times, keyed by the table's row names."""
    from portal.extensions import db
    from portal.models import Ticket
    from portal.services import ticket_list
    from portal.services import tickets as svc

    msp_id = world["msp_id"]
    todo = list(db.session.scalars(
        Ticket.__table__.select().with_only_columns(Ticket.id)
        .where(Ticket.msp_id == msp_id, Ticket.status.in_(ticket_list.TODO_STATUSES))))
    sample = [db.session.get(Ticket, i) for i in rng.sample(todo, min(n, len(todo)))]
    deep = []
    for t in sample:
        sort = rng.choice(list(ticket_list.SORTS))
        chosen = ticket_list.SORTS[sort]
        cursor = ticket_list._encode_cursor(chosen, chosen.descending, rng.choice(("after", "before")), t)
        deep.append(f"/tickets?sort={sort}&cursor={cursor}")
    db.session.expunge_all()
    filters = []
    for _ in range(n):
        parts = [f"client={rng.choice(world['customers'])}", f"priority={rng.choice(('low', 'normal', 'high'))}",
                 f"status={rng.choice(svc.WORK_STATUSES)}", f"assignee={rng.choice(world['techs'])}",
                 f"mailbox={rng.choice(world['boxes'])}", "new=1", f"sort={rng.choice(list(ticket_list.SORTS))}"]
        filters.append("/tickets?" + "&".join(rng.sample(parts, rng.randint(1, 3))))
    common = [f"/tickets?q={w}" for w in rng.choices(("printer", "error", "please", "server", "password"), k=n)]
    rare = [f"/tickets?q={RARE_WORD}&status={s}" for s in rng.choices(("", "closed"), k=n)]
    ticket_pages = [f"/tickets/T-{rng.randint(1, n_tickets)}" for _ in range(n)]
    return {
        "list, first page": ["/tickets"] * n,
        "list, 1-3 filters and a sort": filters,
        "list, deep page by cursor": deep,
        "list, search a common word": common,
        "list, search a rare word": rare,
        "ticket page, random ticket": ticket_pages,
    }


def run_database(kind: str, url: str, args, seeder=None) -> list[tuple[str, list[float]]]:
    """Build the database (bench_portal's seed unless another seeder is given), then time each
    kind of page through the real views."""
    from portal.app import create_app
    from portal.extensions import db

    rng = random.Random(42)
    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        world = build_database(app, kind, args.tickets, args.messages, rng, seeder)
        urls = page_urls(world, args.tickets, args.requests, rng)
        client = app.test_client()
        sign_in(client, world["tech_email"])
        settle(client, urls)
        rows = [(name, measure(client, these)) for name, these in urls.items()]
        db.session.remove()
        db.engine.dispose()
    return rows


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(results: dict, n_tickets: int, n_messages: int, requests: int) -> list[str]:
    """Prints the table (database, page, p50, p95, max) and returns the names of the rows over the goal."""
    over = []
    say()
    say(f"Portal response times, {n_tickets:,} tickets / {n_messages:,} messages, "
        f"{requests} requests each (ms; goal p95 < {TARGET_MS})")
    say(f"{'database':<11} {'page':<32} {'p50':>7} {'p95':>7} {'max':>7}")
    for kind, rows in results.items():
        for name, times in rows:
            p95 = percentile(times, 95)
            if p95 >= TARGET_MS:
                over.append(f"{kind}: {name}")
            say(f"{kind:<11} {name:<32} {statistics.median(times):7.1f} {p95:7.1f} {max(times):7.1f}"
                + ("" if p95 < TARGET_MS else "  over the goal"))
    return over


def run(args, seeder=None, kinds: list[str] | None = None) -> dict[str, list[tuple[str, list[float]]]]:
    """Each database of --databases (or kinds) built and timed in a scratch database of its own."""
    kinds = kinds or [d.strip() for d in args.databases.split(",") if d.strip()]
    if "postgresql" in kinds:
        why = pg_unreachable(args.pg_url)
        if why:
            say(f"== PostgreSQL skipped: none reachable at {make_url(args.pg_url).render_as_string()} ({why}) ==")
            kinds.remove("postgresql")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tmportal-") as workdir:
        os.environ.setdefault("TIDEMARK_INSTANCE_DIR", str(Path(workdir) / "instance"))
        for kind in kinds:
            say(f"== {kind}, {args.tickets:,} tickets ==")
            database = ScratchDatabase(kind, Path(tempfile.mkdtemp(prefix="tmportal-kept-") if args.keep else workdir),
                                       args.pg_url)
            try:
                results[kind] = run_database(kind, database.url, args, seeder)
            finally:
                if args.keep:
                    say(f"  kept: {database.url}")
                else:
                    database.drop()
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--requests", type=int, default=200, help="requests per kind of page")
    ap.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both")
    ap.add_argument("--keep", action="store_true",
                    help="keep the seeded databases (their addresses are printed) to look at query plans")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for the scratch database (BENCH_DATABASE_URL)")
    args = ap.parse_args(argv)
    if args.messages < args.tickets:
        ap.error("every ticket has at least one message: --messages >= --tickets")
    results = run(args)
    report(results, args.tickets, args.messages, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())

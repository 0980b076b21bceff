"""The portal benchmark (tests.bench.bench_portal) at scale: an MSP of 1,000,000 tickets and
5,000,000 messages seeded in the database itself (tests.soak.seeding), then list, filters, deep
page, search and ticket page timed through the real views, p95 against the 100 ms goal.

    .venv/bin/python -m tests.soak.scale [--tickets 1000000] [--messages 5 x tickets]
        [--requests 100] [--databases postgresql,sqlite] [--sqlite-sizes 100000,300000]

PostgreSQL at --tickets. SQLite at each of --sqlite-sizes up to --tickets (five messages a
ticket, as at full size), so that the table shows where SQLite stops holding the goal. Not a test:
it prints a table and exits 1 when a PostgreSQL page misses the goal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from copy import copy

from tests.bench import bench_portal
from tests.bench.bench_portal import DEFAULT_PG, TARGET_MS, percentile, say
from tests.soak.seeding import seed_bulk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, help="messages in all (default: 5 a ticket)")
    ap.add_argument("--requests", type=int, default=100, help="requests per kind of page")
    ap.add_argument("--databases", default="postgresql,sqlite", help="postgresql, sqlite or both")
    ap.add_argument("--sqlite-sizes", default="100000,300000",
                    help="ticket counts SQLite is measured at (those above --tickets are left out)")
    ap.add_argument("--keep", action="store_true", help="keep the seeded databases to look at query plans")
    ap.add_argument("--seeded", metavar="URL",
                    help="time the pages of a database kept by an earlier --keep run (PostgreSQL) instead of seeding")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                    help="PostgreSQL server for the scratch database (BENCH_DATABASE_URL)")
    args = ap.parse_args(argv)
    args.messages = args.messages or 5 * args.tickets
    if args.messages < args.tickets:
        ap.error("every ticket has at least one message: --messages >= --tickets")
    kinds = [d.strip() for d in args.databases.split(",") if d.strip()]
    runs: list[tuple[str, int, int]] = []  # (database, tickets, messages)
    if "postgresql" in kinds:
        runs.append(("postgresql", args.tickets, args.messages))
    if "sqlite" in kinds:
        sizes = sorted({min(int(s), args.tickets) for s in args.sqlite_sizes.split(",") if s.strip()})
        ratio = args.messages / args.tickets
        runs += [("sqlite", n, round(n * ratio)) for n in sizes]

    results = []
    if args.seeded:
        runs = []
        tickets, messages, rows = measure_seeded(args.seeded, args.requests)
        results.append(("postgresql", tickets, messages, rows))
        bench_portal.report({"postgresql": rows}, tickets, messages, args.requests)
    for kind, tickets, messages in runs:
        one = copy(args)
        one.tickets, one.messages = tickets, messages
        began = time.perf_counter()
        measured = bench_portal.run(one, seed_bulk, [kind])
        if kind in measured:
            results.append((kind, tickets, messages, measured[kind]))
            say(f"  ({time.perf_counter() - began:.0f}s in all)")
            bench_portal.report(measured, tickets, messages, args.requests)

    say()
    say(f"Portal at scale: p95 in ms ({args.requests} requests a page; goal < {TARGET_MS} ms)")
    pages = [name for name, _ in results[0][3]] if results else []
    header = f"{'database':<11} {'tickets':>10} {'messages':>10}  " + " ".join(f"{short(p):>10}" for p in pages)
    say(header)
    missed_on_pg = []
    for kind, tickets, messages, rows in results:
        cells = []
        for name, times in rows:
            p95 = percentile(times, 95)
            cells.append(f"{p95:9.1f}{'*' if p95 >= TARGET_MS else ' '}")
            if p95 >= TARGET_MS and kind == "postgresql":
                missed_on_pg.append(name)
        say(f"{kind:<11} {tickets:>10,} {messages:>10,}  " + " ".join(cells))
    say("* over the goal. Pages: " + "; ".join(f"{short(p)} = {p}" for p in pages))
    for size in sorted({t for k, t, _m, _r in results if k == "sqlite"}):
        over = [name for k, t, _m, rows in results if k == "sqlite" and t == size
                for name, times in rows if percentile(times, 95) >= TARGET_MS]
        say(f"SQLite at {size:,} tickets: "
            + ("every page within the goal" if not over else "over: " + ", ".join(over)))
    return 1 if missed_on_pg else 0


def measure_seeded(url: str, requests: int) -> tuple[int, int, list]:
    """bench_portal's pages on a database seeded before; its world read back from it."""
    import random

    from sqlalchemy import select

    from portal.app import create_app
    from portal.extensions import db
    from portal.models import Client, Mailbox, Message, Ticket, User

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        msp = db.session.scalar(select(Client).where(Client.name == "Bench MSP"))
        techs = list(db.session.scalars(select(User).where(User.msp_id == msp.id).order_by(User.id)))
        world = {"msp_id": msp.id, "techs": [t.id for t in techs], "tech_email": techs[0].email,
                 "customers": list(db.session.scalars(select(Client.id).where(Client.parent_id == msp.id))),
                 "boxes": list(db.session.scalars(select(Mailbox.id).where(Mailbox.msp_id == msp.id)))}
        tickets = db.session.scalar(select(db.func.max(Ticket.number)))
        messages = db.session.scalar(select(db.func.count()).select_from(Message))
        rng = random.Random(42)
        urls = bench_portal.page_urls(world, tickets, requests, rng)
        client = app.test_client()
        bench_portal.sign_in(client, world["tech_email"])
        bench_portal.settle(client, urls)
        rows = [(name, bench_portal.measure(client, these)) for name, these in urls.items()]
        db.session.remove()
        db.engine.dispose()
    return tickets, messages, rows


SHORT = {"list, first page": "list", "list, 1-3 filters and a sort": "filters",
         "list, deep page by cursor": "deep page", "list, search a common word": "common",
         "list, search a rare word": "rare", "ticket page, random ticket": "ticket"}


def short(page: str) -> str:
    return SHORT.get(page, page[:10])


if __name__ == "__main__":
    sys.exit(main())

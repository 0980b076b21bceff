"""A large MSP seeded fast: the world through the services (tests.bench.bench_portal.seed_world),
then the tickets and messages by INSERT … SELECT over a number series inside the database
(generate_series on PostgreSQL, a recursive CTE on SQLite), not row by row from Python.

Subjects and bodies come from small pools written first (bench_portal's Text: Zipf-like words);
every other value is a fixed hash of the row's number, so the same size gives the same data on
both databases. Shares of statuses, priorities and assignees follow bench_portal's seed; a
handful of messages carry bench_portal.RARE_WORD.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from tests.bench.bench_portal import (
    N_CONTACTS,
    RARE_WORD,
    STATUS_SHARES,
    Text,
    say,
    seed_world,
)

SUBJECTS, BODIES = 1_000, 20_000
RARE_MESSAGES = 12


# One odd multiplier per use: with one multiplier and added salts, the picks of a row (its status,
# priority, client) would move together, and some combinations would never occur.
_MULTIPLIERS = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 1597334677, 3812015801, 2869860233,
                1103515245, 1664525, 22695477, 134775813)


def _hash(column: str, salt: int, wide: bool = False) -> str:
    """A multiplicative hash of an integer column, the same in both databases: the high 16 bits
    of its product with the salt's multiplier modulo 2**32 (0 … 65535); wide: all 32 bits."""
    product = f"((CAST({column} AS BIGINT) * {_MULTIPLIERS[salt]}) % 4294967296)"
    return product if wide else f"({product} / 65536)"


def _pick(column: str, salt: int, values: list) -> str:
    """One of values chosen by the hash, as a CASE (NULL for a None)."""
    whens = " ".join(f"WHEN {i} THEN {'NULL' if v is None else v}" for i, v in enumerate(values))
    return f"CASE {_hash(column, salt)} % {len(values)} {whens} END"


def _shares(column: str, salt: int, shares) -> str:
    whens, upto = [], 0
    for value, share in shares:
        upto += share
        whens.append(f"WHEN {_hash(column, salt)} % 100 < {upto} THEN '{value}'")
    return "CASE " + " ".join(whens) + " END"


def seed_bulk(app, kind: str, n_tickets: int, n_messages: int, rng: random.Random, technicians: int = 8) -> dict:
    """bench_portal's seeder signature: tickets 1…n_tickets (T-1 …), each with one message or
    more, n_messages in all. Returns bench_portal's world."""
    from portal.extensions import db
    from portal.services import commit

    world = seed_world(app, technicians=technicians)
    pg = kind == "postgresql"
    texts = Text(rng)
    session = db.session
    session.execute(text("CREATE TABLE seed_subjects (k INTEGER PRIMARY KEY, subject TEXT NOT NULL)"))
    session.execute(text("CREATE TABLE seed_bodies (k INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
    session.execute(text("CREATE TABLE seed_contacts (k INTEGER PRIMARY KEY, contact_id INTEGER, client_id INTEGER)"))
    session.execute(text("INSERT INTO seed_subjects VALUES (:k, :s)"),
                    [{"k": k, "s": texts.subject()} for k in range(SUBJECTS)])
    session.execute(text("INSERT INTO seed_bodies VALUES (:k, :b)"),
                    [{"k": k, "b": texts.body()} for k in range(BODIES)])
    session.execute(text("INSERT INTO seed_contacts SELECT :k, id, client_id FROM contacts WHERE id = :id"),
                    [{"k": k, "id": cid} for k, cid in enumerate(world["contacts"])])
    commit()

    now = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    # Created evenly over three years ending two weeks ago; updated within two weeks of it.
    start = now - timedelta(days=3 * 365 + 14)
    span = 3 * 365 * 86400
    if pg:
        series = "generate_series(1, {n}) AS g(n)"
        empty_list, empty_map, no = "'[]'::json", "'{}'::json", "false"

        def at(seconds: str) -> str:
            return f"(TIMESTAMP '{start.isoformat(sep=' ')}' + ({seconds}) * INTERVAL '1 second')"
        session.execute(text("SET LOCAL synchronous_commit = off"))
    else:
        series = "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s) AS g"
        empty_list, empty_map, no = "'[]'", "'{}'", "0"
        epoch = int(start.replace(tzinfo=timezone.utc).timestamp())

        def at(seconds: str) -> str:  # SQLAlchemy's own text form, microseconds included
            return f"(strftime('%Y-%m-%d %H:%M:%S', {epoch} + ({seconds}), 'unixepoch') || '.000000')"

    created = f"(CAST(n - 1 AS BIGINT) * {span} / {n_tickets})"
    updated = f"({created} + 60 * ({_hash('n', 4)} % 20160))"
    msp_id = world["msp_id"]
    session.execute(text(f"""
        INSERT INTO tickets (id, msp_id, number, reference, uuid, mailbox_id, client_id, contact_id, subject,
                             status, priority, source, assignee_id, new_information, cc, created_at, updated_at)
        SELECT n, {msp_id}, n, 'T-' || n, CAST(10000000000 + n AS TEXT) || '{"0" * 21}',
               {_pick('n', 1, world['boxes'])}, c.client_id, c.contact_id, s.subject,
               {_shares('n', 2, STATUS_SHARES)}, {_shares('n', 3, (('low', 20), ('normal', 70), ('high', 10)))},
               'email', {_pick('n', 5, [None, *world['techs']])}, {_hash('n', 6)} % 5 = 0, {empty_list},
               {at(created)}, {at(updated)}
        FROM {series.format(n=n_tickets)}
        JOIN seed_contacts c ON c.k = {_hash('n', 7)} % {N_CONTACTS}
        JOIN seed_subjects s ON s.k = {_hash('n', 8)} % {SUBJECTS}"""))
    commit()
    # New mail numbers its tickets after these (portal.inbound.context.TicketNumbers).
    session.execute(text(f"UPDATE clients SET last_ticket_number = {n_tickets} WHERE id = {msp_id}"))
    commit()
    say(f"  {n_tickets:,} tickets written")
    # Message n <= n_tickets opens ticket n; the rest are spread over the tickets by a hash.
    ticket = f"(CASE WHEN n <= {n_tickets} THEN n ELSE 1 + {_hash('n', 0, wide=True)} % {n_tickets} END)"
    rare_every = max(1, n_messages // RARE_MESSAGES)
    answered = f"600 * (CASE WHEN n <= {n_tickets} THEN 0 ELSE 1 + n % 7 END)"  # replies come after the first
    rare = (f"CASE WHEN {_hash('n', 10, wide=True)} % {rare_every} = 0 "
            f"THEN ' The {RARE_WORD} adapter is back.' ELSE '' END")
    if pg:
        session.execute(text("SET LOCAL synchronous_commit = off"))
    session.execute(text(f"""
        INSERT INTO messages (id, msp_id, mailbox_id, ticket_id, direction, outcome, message_id, "references",
                              from_address, from_name, "to", cc, subject, created_at, body_text, full_text,
                              auto_generated, priority, trace, details)
        SELECT n, {msp_id}, t.mailbox_id, t.id,
               CASE WHEN n <= {n_tickets} OR n % 2 = 0 THEN 'in' ELSE 'out' END,
               CASE WHEN n <= {n_tickets} THEN 'created' END,
               '<' || n || '.bench@customer.example>', {empty_list},
               'user' || t.contact_id || '@x.example', '', {empty_list}, {empty_list}, t.subject,
               {at(created.replace('n - 1', 't.id - 1') + ' + ' + answered)},
               b.body || {rare},
               '', {no}, 'normal', {empty_list}, {empty_map}
        FROM {series.format(n=n_messages)}
        JOIN tickets t ON t.id = {ticket}
        JOIN seed_bodies b ON b.k = {_hash('n', 11)} % {BODIES}"""))
    commit()
    say(f"  {n_messages:,} messages written")
    for table in ("seed_subjects", "seed_bodies", "seed_contacts"):
        session.execute(text(f"DROP TABLE {table}"))
    if pg:  # the rows came with their ids: move the sequences past them
        for table in ("tickets", "messages"):
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"(SELECT max(id) FROM {table}))"))
    commit()
    return world

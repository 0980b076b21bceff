"""one_of(): a batch's worth of values looked up in one column, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import insert, select

from portal.extensions import db
from portal.models import Setting
from portal.inbound.lookups import CHUNK, one_of


def test_finds_exactly_the_rows_asked_for_however_long_the_list(app):
    db.session.execute(insert(Setting), [{"key": f"k{i}", "value": i} for i in range(1300)])
    asked = [f"k{i}" for i in range(0, 1300, 2)] + [f"absent{i}" for i in range(600)]
    conditions = list(one_of(Setting.key, asked))
    found = [key for c in conditions for key in db.session.scalars(select(Setting.key).where(c))]
    assert sorted(found) == sorted(f"k{i}" for i in range(0, 1300, 2))
    postgres = db.session.get_bind().dialect.name == "postgresql"
    # One statement on PostgreSQL; chunks within SQLite's parameter limit elsewhere.
    assert len(conditions) == (1 if postgres else -(-len(asked) // CHUNK))


def test_an_empty_list_asks_nothing(app):
    assert list(one_of(Setting.key, [])) == []


def test_the_duplicate_lookup_reads_only_the_fingerprint_indexes(app, world):
    """Each fingerprint is looked up on its own index: were the mailbox's messages read
    instead, every batch would cost more as the mailbox grows."""
    from sqlalchemy import event

    from tests.mailfactory import email

    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: its planner is the one that gives up on an OR of indexed columns")
    box = world.mailbox(world.msp("Acme MSP"))
    seen = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT") and "fp_" in statement.partition("WHERE")[2]:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", keep)
    try:
        world.deliver(box, email(sender="alice@contoso.com"))
    finally:
        event.remove(db.engine, "before_cursor_execute", keep)
    assert seen, "the batch made no fingerprint lookup"
    for statement, parameters in seen:
        plan = [row[3] for row in db.session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                             tuple(parameters))]
        searches = [step for step in plan if "messages" in step]
        assert searches and all("(mailbox_id=? AND fp_" in step for step in searches), plan

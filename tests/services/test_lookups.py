"""one_of(): a batch's worth of values looked up in one column, on SQLite and PostgreSQL."""

from sqlalchemy import insert, select

from portal.extensions import db
from portal.models import Setting
from portal.services.lookups import CHUNK, one_of


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

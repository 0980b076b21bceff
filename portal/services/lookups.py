"""Looking up a batch's worth of values (hundreds of ids, fingerprints, addresses) in one column."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import ARRAY, any_, bindparam
from sqlalchemy.sql.elements import ColumnElement

from portal.extensions import db

# SQLite's default limit is 32,766 bound parameters; a chunk stays far below it.
CHUNK = 500


def one_of(column, values: Iterable) -> Iterator[ColumnElement[bool]]:
    """Conditions that together select the rows whose `column` holds one of `values`: run one
    query per condition. PostgreSQL takes the whole list as one array parameter: the statement
    reads the same whatever the list's length, so it is parsed, planned and prepared once per
    connection, where `IN` with a parameter per value is compiled, sent and planned anew for
    every length. SQLite gets `IN` over chunks."""
    values = list(values)
    if not values:
        return
    if db.session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(None, values, type_=ARRAY(column.type)))
        return
    for chunk in chunks(values):
        yield column.in_(chunk)


def chunks(values: list, size: int = CHUNK) -> Iterator[list]:
    """`values` in slices of at most `size`, for statements that take one parameter per value."""
    for start in range(0, len(values), size):
        yield values[start:start + size]

"""Writing a decided batch: its raw messages marked decided in one UPDATE (BatchWriter), and its
new rows in a few statements instead of the ORM's flush.

The inbound pipeline builds ORM objects (tickets, messages, contacts, attachments, links), which
keeps its code plain. Flushing them costs more than deciding them: per row the unit of work
collects attribute history, sorts dependencies and, on PostgreSQL, psycopg binds and sends each
row of an executemany on its own. So the batch gives its new rows their primary keys here, copies
the keys into the foreign-key columns the relationships imply, inserts each table in one go
(COPY on PostgreSQL, one executemany elsewhere) and then tells the session the objects are
persistent, as a flush would have. Changes to rows that already existed are left to the flush.
"""

from __future__ import annotations

import json

from sqlalchemy import JSON, LargeBinary, insert, inspect, text, update
from sqlalchemy.orm.interfaces import MANYTOONE

from portal.extensions import db
from portal.inbound.lookups import chunks
from portal.models import RawMessage

# Parents before children: foreign keys are checked as each table is written.
BATCH_TABLES = ("contacts", "tickets", "messages", "attachments", "ticket_links")
_SEQUENCES: dict[str, str] = {}
_MISSING = object()


class BatchWriter:
    """From begin() to write(), the raw messages a batch decides are marked in one UPDATE and its
    new rows are written in a few statements. Outside a batch, each message's row is marked
    on its own and the flush writes."""

    def __init__(self) -> None:
        # Raw messages decided by the batch path; None: each is marked on its own row.
        self._decided: list[int] | None = None

    def reset(self) -> None:
        self._decided = None

    def begin(self) -> None:
        """From here until write(), decided raw messages are marked in one UPDATE."""
        self._decided = []

    def mark_decided(self, stored: RawMessage) -> None:
        if self._decided is not None and stored.id is not None:
            self._decided.append(stored.id)
        else:
            stored.state = "decided"
            stored.last_error = None

    def write(self) -> None:
        """Write what the batch decided: one UPDATE for the raw messages, then every new row
        with its primary key already given, so that the flush inserts each table with plain
        executemany (no RETURNING, which on SQLite means one statement per row)."""
        decided, self._decided = self._decided or [], None
        session = db.session
        with session.no_autoflush:
            # First, so that on SQLite this transaction holds the write lock before any
            # max(id) is read below: no other writer can take those ids meanwhile.
            # IN rather than one_of(): the session can evaluate IN to update the loaded raws.
            for chunk in chunks(decided):
                # Only rows still new: a raw message is decided once, and a batch that finds
                # one decided by someone else is rolled back rather than deciding it again.
                done = session.execute(update(RawMessage).where(RawMessage.id.in_(chunk), RawMessage.state == "new")
                                       .values(state="decided", last_error=None)
                                       .execution_options(synchronize_session="evaluate"))
                if done.rowcount != len(chunk):
                    raise AlreadyDecided(f"{len(chunk) - done.rowcount} of these messages were decided meanwhile")
            if decided:
                insert_new_rows(session)
        session.flush()  # what is left: changes to rows that were there already


class AlreadyDecided(RuntimeError):
    """Another run decided some of the batch's messages first."""


class _TablePlan:
    """What writing one mapped class needs, worked out once per class."""

    def __init__(self, cls: type) -> None:
        mapper = inspect(cls)
        self.table = cls.__table__
        self.columns: list[tuple[str, str]] = []  # (column name, attribute)
        # (attribute, default, callable, keeps None) per column with a Python-side default.
        self.defaults: list[tuple[str, object, bool, bool]] = []
        for col in self.table.columns:
            self.columns.append((col.name, mapper.get_property_by_column(col).key))
        for col in _python_defaults(self.table):
            # JSON keeps an explicit None as null; everywhere else None takes the default.
            self.defaults.append((mapper.get_property_by_column(col).key, col.default.arg, col.default.is_callable,
                                  bool(col.type.should_evaluate_none)))
        # (relationship, [(our attribute, its attribute)]): the foreign keys a relationship sets.
        # Only the many-to-one side: every collection here has it as its back-reference.
        self.parents: list[tuple[str, list[tuple[str, str]]]] = [
            (rel.key, [(mapper.get_property_by_column(local).key, rel.mapper.get_property_by_column(remote).key)
                       for local, remote in rel.local_remote_pairs])
            for rel in mapper.relationships if rel.direction is MANYTOONE and rel.secondary is None]

    def fill_defaults(self, state: dict) -> None:
        """Column defaults given explicitly, exactly as the INSERT would have given them."""
        for key, default, is_callable, keeps_none in self.defaults:
            value = state.get(key, _MISSING)
            if value is _MISSING or (value is None and not keeps_none):
                state[key] = default(None) if is_callable else default

    def link(self, state: dict) -> None:
        """Copy the keys of related objects into this row's foreign-key columns, as the flush's
        dependency processing would."""
        for rel, pairs in self.parents:
            parent = state.get(rel)
            if parent is not None:
                for ours, theirs in pairs:
                    state[ours] = getattr(parent, theirs)  # a persistent parent may be expired


_PLANS: dict[type, _TablePlan] = {}


def _plan(cls: type) -> _TablePlan:
    found = _PLANS.get(cls)
    if found is None:
        found = _PLANS[cls] = _TablePlan(cls)
    return found


def insert_new_rows(session) -> None:
    """Insert the session's new rows of the batch tables now. On SQLite the caller must hold
    the database's write lock (any write in this transaction takes it): new ids follow the
    highest id in each table."""
    with session.no_autoflush:  # a query here must not flush them the ordinary way first
        _insert_new_rows(session)


def _insert_new_rows(session) -> None:
    dialect = session.get_bind().dialect
    if dialect.name not in ("postgresql", "sqlite"):
        return  # the flush writes them
    waiting: dict[str, list] = {}
    for obj in session.new:
        table = getattr(type(obj), "__tablename__", None)
        if table in BATCH_TABLES:
            waiting.setdefault(table, []).append(obj)
    if not waiting:
        return
    for objs in waiting.values():
        # In the order they were added: ids keep meaning "older".
        objs.sort(key=lambda o: inspect(o).insert_order)
        _assign_ids(session, objs, dialect.name)
    written = []
    for table in BATCH_TABLES:
        objs = waiting.get(table)
        if not objs:
            continue
        plan = _plan(type(objs[0]))
        for obj in objs:
            # Written straight into the instance's state: these are the values the row gets,
            # not changes the unit of work should see.
            state = obj.__dict__
            plan.fill_defaults(state)
            plan.link(state)
        insert_rows(session, plan.table, [{name: obj.__dict__.get(key) for name, key in plan.columns} for obj in objs])
        written += objs
    # Now they are rows. The session is told so exactly as a flush tells it (identity map,
    # history reset, and the transaction's list of new objects, so that a rollback expunges
    # them again): there is no public call for "these pending objects were inserted".
    real = session.registry() if hasattr(session, "registry") else session  # a scoped session
    real._register_persistent({inspect(obj) for obj in written})


def _assign_ids(session, objs: list, dialect: str) -> None:
    """PostgreSQL: from the table's own sequence, in one query. SQLite: after the highest id."""
    missing = [o for o in objs if o.id is None]
    if not missing:
        return
    table = type(missing[0]).__tablename__
    if dialect == "postgresql":
        sequence = _SEQUENCES.get(table)
        if sequence is None:
            sequence = _SEQUENCES[table] = session.scalar(text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
        ids = session.scalars(text("SELECT nextval(:seq) FROM generate_series(1, :n)"),
                              {"seq": sequence, "n": len(missing)}).all()
    else:
        top = session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {table}"))
        ids = range(top + 1, top + 1 + len(missing))
    for obj, new_id in zip(missing, ids):
        obj.__dict__["id"] = new_id


def insert_rows(session, table, rows: list[dict]) -> None:
    """Insert rows (dicts with the same keys; a column left out takes its default) in one go:
    COPY … FROM STDIN on PostgreSQL, on the session's own connection and inside its
    transaction; one executemany elsewhere."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    from psycopg import sql  # noqa: PLC0415 - PostgreSQL only

    given = list(rows[0])
    # COPY applies no Python-side defaults: they are added here, as an INSERT would add them.
    defaults = [col.default for col in _python_defaults(table) if col.name not in rows[0]]
    columns = {col.name: col for col in table.columns}
    names = given + [d.column.name for d in defaults]
    processors = [_processor(columns[name], dialect) for name in names]
    # COPY's text format sends bytes as hex, twice their size, for the server to decode again;
    # the binary format sends them as they are. Tables of text stay in text format, which
    # psycopg writes faster (measured: binary for every table made the ingest slower).
    binary = _carries_bytes(table)
    statement = sql.SQL("COPY {} ({}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")).format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names))
    connection = session.connection().connection.driver_connection
    types = _column_types(connection, table.name) if binary else {}  # asked before COPY holds the connection
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        if binary:
            copy.set_types([types[name] for name in names])
        for row in rows:
            values = [row[name] for name in given]
            values += [d.arg(None) if d.is_callable else d.arg for d in defaults]
            copy.write_row([value if process is None or value is None else process(value)
                            for process, value in zip(processors, values)])


def _carries_bytes(table) -> bool:
    """Binary COPY for tables with a bytes column. Not with JSON columns: their values are
    written as JSON text here, which the binary format would encode a second time."""
    types = [type(col.type) for col in table.columns]
    return any(issubclass(t, LargeBinary) for t in types) and not any(issubclass(t, JSON) for t in types)


_COLUMN_TYPES: dict[str, dict[str, int]] = {}


def _column_types(connection, table: str) -> dict[str, int]:
    """Column name → type oid, as the binary format needs them (built-in types: the same oids
    in every database)."""
    if table not in _COLUMN_TYPES:
        _COLUMN_TYPES[table] = dict(connection.execute(
            "SELECT attname, atttypid::int FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)).fetchall())
    return _COLUMN_TYPES[table]


def _python_defaults(table) -> list:
    """The columns whose default SQLAlchemy computes in Python (a value or a function), which
    both the flush and an INSERT would apply; SQL-expression defaults are the database's."""
    return [col for col in table.columns
            if col.default is not None and (col.default.is_scalar or col.default.is_callable)]


_PROCESSORS: dict[tuple[str, str, str], object] = {}


def _processor(column, dialect):
    """What SQLAlchemy would do to a value before the driver sees it (COPY skips it). JSON is
    left to the driver's adapters there, which COPY's text rows do not use."""
    key = (column.table.name, column.name, dialect.name)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = json.dumps if isinstance(column.type, JSON) else column.type.bind_processor(dialect)
    return _PROCESSORS[key]

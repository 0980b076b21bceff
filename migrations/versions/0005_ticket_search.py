"""ticket search: full-text over subjects and message bodies, indexes for the list's sorts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:30:00

PostgreSQL: GIN indexes on to_tsvector('simple', ...) expressions ('simple': no stemming, so
any language works); the queries in portal/services/ticket_list.py repeat these expressions exactly.
SQLite: FTS5 tables over the same columns (external content: they hold only the index), kept up
to date by triggers because the ingest writes messages in bulk through the ORM.
The search objects are named fts_* and are not described by the models (migrations/env.py skips
them when comparing).
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# Ticket list sorts and filters: each walks one of these in order and stops after a page.
LIST_INDEXES = [
    ('ix_tickets_msp_updated', ['msp_id', 'updated_at', 'id']),
    ('ix_tickets_msp_created', ['msp_id', 'created_at', 'id']),
    ('ix_tickets_msp_status_updated', ['msp_id', 'status', 'updated_at', 'id']),
    ('ix_tickets_msp_priority_updated', ['msp_id', 'priority', 'updated_at', 'id']),
    ('ix_tickets_client_updated', ['client_id', 'updated_at', 'id']),
]

SQLITE_UP = [
    "CREATE VIRTUAL TABLE fts_tickets USING fts5(subject, content='tickets', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE fts_messages USING fts5(body_text, content='messages', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "INSERT INTO fts_tickets(fts_tickets) VALUES ('rebuild')",
    "INSERT INTO fts_messages(fts_messages) VALUES ('rebuild')",
    """CREATE TRIGGER fts_tickets_insert AFTER INSERT ON tickets BEGIN
         INSERT INTO fts_tickets(rowid, subject) VALUES (new.id, new.subject);
       END""",
    """CREATE TRIGGER fts_tickets_delete AFTER DELETE ON tickets BEGIN
         INSERT INTO fts_tickets(fts_tickets, rowid, subject) VALUES ('delete', old.id, old.subject);
       END""",
    """CREATE TRIGGER fts_tickets_update AFTER UPDATE OF subject ON tickets BEGIN
         INSERT INTO fts_tickets(fts_tickets, rowid, subject) VALUES ('delete', old.id, old.subject);
         INSERT INTO fts_tickets(rowid, subject) VALUES (new.id, new.subject);
       END""",
    """CREATE TRIGGER fts_messages_insert AFTER INSERT ON messages BEGIN
         INSERT INTO fts_messages(rowid, body_text) VALUES (new.id, new.body_text);
       END""",
    """CREATE TRIGGER fts_messages_delete AFTER DELETE ON messages BEGIN
         INSERT INTO fts_messages(fts_messages, rowid, body_text) VALUES ('delete', old.id, old.body_text);
       END""",
    """CREATE TRIGGER fts_messages_update AFTER UPDATE OF body_text ON messages BEGIN
         INSERT INTO fts_messages(fts_messages, rowid, body_text) VALUES ('delete', old.id, old.body_text);
         INSERT INTO fts_messages(rowid, body_text) VALUES (new.id, new.body_text);
       END""",
]

SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS fts_messages_update",
    "DROP TRIGGER IF EXISTS fts_messages_delete",
    "DROP TRIGGER IF EXISTS fts_messages_insert",
    "DROP TRIGGER IF EXISTS fts_tickets_update",
    "DROP TRIGGER IF EXISTS fts_tickets_delete",
    "DROP TRIGGER IF EXISTS fts_tickets_insert",
    "DROP TABLE IF EXISTS fts_messages",
    "DROP TABLE IF EXISTS fts_tickets",
]

# A body longer than this is searched on its beginning: a tsvector holds at most 1 MB, and a
# pasted log must not make the insert fail.
POSTGRES_UP = [
    "CREATE INDEX fts_tickets_subject ON tickets USING gin (to_tsvector('simple', subject))",
    "CREATE INDEX fts_messages_body ON messages USING gin (to_tsvector('simple', left(body_text, 100000)))",
]

POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS fts_messages_body",
    "DROP INDEX IF EXISTS fts_tickets_subject",
]


def upgrade():
    op.drop_index('ix_tickets_msp_status', table_name='tickets')
    for name, columns in LIST_INDEXES:
        op.create_index(name, 'tickets', columns)
    dialect = op.get_bind().dialect.name
    for statement in {'sqlite': SQLITE_UP, 'postgresql': POSTGRES_UP}.get(dialect, []):
        op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    for statement in {'sqlite': SQLITE_DOWN, 'postgresql': POSTGRES_DOWN}.get(dialect, []):
        op.execute(statement)
    for name, _columns in reversed(LIST_INDEXES):
        op.drop_index(name, table_name='tickets')
    op.create_index('ix_tickets_msp_status', 'tickets', ['msp_id', 'status'])

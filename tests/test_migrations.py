"""The migrations build exactly the schema the models describe (the `flask db check` promise)."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portal.extensions import db


def fts_left_out(name, type_, parent_names):
    """As migrations/env.py: the hand-built full-text search objects (0005) are not modelled."""
    return not (type_ in ("table", "index") and name and name.startswith("fts_"))


def test_migrated_database_matches_the_models(app):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": fts_left_out}), db.metadata)
    assert diff == []


def test_search_objects_exist_and_downgrade_removes_them(app):
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import inspect

    def search_objects():
        inspector = inspect(db.engine)
        return {n for n in inspector.get_table_names() if n.startswith("fts_")} | {
            i["name"] for t in ("tickets", "messages") for i in inspector.get_indexes(t) if i["name"].startswith("fts_")}

    expected = ({"fts_tickets_subject", "fts_messages_body"} if db.engine.dialect.name == "postgresql"
                else {"fts_tickets", "fts_messages"})
    assert expected <= search_objects()
    downgrade(revision="0004")
    db.engine.dispose()
    assert search_objects() == set()
    upgrade()
    db.engine.dispose()
    assert expected <= search_objects()


def test_flask_db_check_agrees(app):
    result = app.test_cli_runner().invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_stored_mail_is_compressed_with_lz4_on_postgresql_and_downgrade_restores_the_default(app):
    import pytest
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite does not compress")

    def methods():  # attcompression: 'l' lz4, 'p' pglz, '' the server's default
        with db.engine.connect() as conn:
            return dict(conn.execute(text(
                "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute"
                " WHERE attrelid IN ('raw_messages'::regclass, 'messages'::regclass, 'attachments'::regclass)"
                " AND attname IN ('raw', 'body_text', 'body_html', 'full_text', 'raw_out', 'data')")).all())

    assert methods() == dict.fromkeys(["raw_messages.raw", "messages.body_text", "messages.body_html",
                                       "messages.full_text", "messages.raw_out", "attachments.data"], "l")
    downgrade(revision="0005")
    db.engine.dispose()
    assert set(methods().values()) == {""}
    upgrade()
    db.engine.dispose()
    assert set(methods().values()) == {"l"}

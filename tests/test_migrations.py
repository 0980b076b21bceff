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


def test_mailbox_oauth_upgrade_keeps_password_mailboxes_and_downgrade_removes_it(app):
    """0009: existing mailboxes read auth "password"; downgrade drops the table and the columns and
    disables a Graph mailbox, which the older code cannot reach."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import inspect, text

    def columns():
        return {c["name"] for c in inspect(db.engine).get_columns("mailboxes")}

    downgrade(revision="0008")
    db.engine.dispose()
    assert "mailbox_oauth" not in inspect(db.engine).get_table_names() and "auth" not in columns()
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO clients (name, disabled, reference_prefix, last_ticket_number, created_at)"
                          " VALUES ('M', false, 'T', 0, CURRENT_TIMESTAMP)"))
        msp = conn.execute(text("SELECT id FROM clients")).scalar()
        conn.execute(text(f"UPDATE clients SET msp_id = {msp}"))
        conn.execute(text(
            "INSERT INTO mailboxes (msp_id, client_id, address, name, status, direction, protocol, host, port,"
            " security, username, verify_tls, folders, after_action, aliases, acknowledge, alert_recipients,"
            " default_status, default_priority, ignore_senders, ignore_subjects, plus_addressing,"
            " keep_raw_attachment, poll_interval, timeout, max_tries, cool_off, skip_windows, failure_count,"
            " streak_alerted, created_at) VALUES"
            f" ({msp}, {msp}, 'old@m.example', '', 'active', 'both', 'imap', 'h', 993, 'ssl', 'u', true,"
            " '[\"INBOX\"]', 'seen', '[]', true, '[]', 'new', 'normal', '[]', '[]', 'off', false, 60, 30, 3, 900,"
            " '[]', 0, false, CURRENT_TIMESTAMP)"))
    upgrade()
    db.engine.dispose()
    with db.engine.begin() as conn:
        assert conn.execute(text("SELECT auth, api_url, status FROM mailboxes")).one() == ("password", None, "active")
        conn.execute(text("UPDATE mailboxes SET protocol = 'graph', auth = 'oauth2'"))
        box = conn.execute(text("SELECT id FROM mailboxes")).scalar()
        conn.execute(text("INSERT INTO mailbox_oauth (mailbox_id, provider, flow, client_id, scopes, state)"
                          f" VALUES ({box}, 'microsoft', 'app', 'c', '[]', 'not connected')"))
    downgrade(revision="0008")
    db.engine.dispose()
    assert "mailbox_oauth" not in inspect(db.engine).get_table_names()
    assert not {"auth", "api_url"} & columns()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM mailboxes")).scalar() == "disabled"
    upgrade()
    db.engine.dispose()
    assert {"auth", "api_url"} <= columns() and "mailbox_oauth" in inspect(db.engine).get_table_names()


def test_rich_templates_upgrade_adds_body_and_layouts_and_downgrade_keeps_raw_templates(app):
    """0015: templates gain subject and body, MSPs a layout table; downgrade drops both and deletes
    the rich-text templates (the older code could not send them) but keeps raw-source ones."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import inspect, text

    def columns():
        return {c["name"] for c in inspect(db.engine).get_columns("email_templates")}

    assert {"subject", "body"} <= columns() and "email_layouts" in inspect(db.engine).get_table_names()
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO clients (name, disabled, reference_prefix, last_ticket_number, created_at)"
                          " VALUES ('M', false, 'T', 0, CURRENT_TIMESTAMP)"))
        msp = conn.execute(text("SELECT id FROM clients")).scalar()
        conn.execute(text(f"UPDATE clients SET msp_id = {msp}"))
        conn.execute(text("INSERT INTO email_templates (msp_id, client_id, event, text_source, shared, updated_at)"
                          f" VALUES ({msp}, {msp}, 'reply', 'Re\nraw', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO email_templates (msp_id, client_id, event, subject, body, shared, updated_at)"
                          f" VALUES ({msp}, {msp}, 'closed', 'Closed', '<p>rich</p>', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO email_layouts (msp_id, css, header, footer, updated_at)"
                          f" VALUES ({msp}, 'p {{}}', '', '', CURRENT_TIMESTAMP)"))
    downgrade(revision="0014")
    db.engine.dispose()
    assert not {"subject", "body"} & columns() and "email_layouts" not in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT event, text_source FROM email_templates")).all() == [("reply", "Re\nraw")]
    upgrade()
    db.engine.dispose()
    assert {"subject", "body"} <= columns() and "email_layouts" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM email_templates")).all() == [(None,)]

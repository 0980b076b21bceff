import subprocess
import sys

import pytest

from config import ConfigError, config_for
from portal.app import create_app


def test_production_refuses_to_start_without_its_secrets(monkeypatch):
    cls = config_for("production")
    monkeypatch.setattr(cls, "SECRET_KEY", None)
    monkeypatch.setattr(cls, "TIDEMARK_ENCRYPTION_KEY", None)
    with pytest.raises(ConfigError, match="SECRET_KEY and TIDEMARK_ENCRYPTION_KEY"):
        create_app("production")


def test_production_cookies_are_secure_by_default(monkeypatch):
    cls = config_for("production")
    monkeypatch.setattr(cls, "SECRET_KEY", "x" * 32)
    monkeypatch.setattr(cls, "TIDEMARK_ENCRYPTION_KEY", "k")
    app = create_app("production")
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_development_generates_its_keys_once_and_keeps_them(tmp_path):
    # A fresh interpreter, because the instance folder is read at import time.
    script = (
        "from portal.app import create_app; a = create_app('development'); "
        "print(a.config['SECRET_KEY']); print(a.config['TIDEMARK_ENCRYPTION_KEY'])"
    )
    env = {"TIDEMARK_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout and len(first.stdout.split()) == 2
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "encryption.key").exists()


def test_unknown_environment_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="not one of"):
        config_for("staging-ish")


def test_on_sqlite_a_worker_commits_while_a_page_is_still_reading(app):
    from portal.extensions import db

    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL readers never block writers")
    page, worker = db.engine.raw_connection(), db.engine.raw_connection()
    try:
        reading, writing = page.cursor(), worker.cursor()
        assert reading.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reading.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: commits survive a power cut
        writing.execute("PRAGMA busy_timeout = 200")
        reading.execute("BEGIN")
        assert reading.execute("SELECT key FROM settings").fetchall() == []  # a read transaction stays open
        writing.execute("INSERT INTO settings (key, value) VALUES ('auto_mail_limit_per_hour', '5')")
        worker.commit()  # with a rollback journal this waits for the reader, then says "database is locked"
        assert reading.execute("SELECT key FROM settings").fetchall() == []  # the reader keeps its snapshot
        page.rollback()
        assert reading.execute("SELECT key FROM settings").fetchall() == [("auto_mail_limit_per_hour",)]
    finally:
        page.close()
        worker.close()


def test_server_networks_are_read_at_start_and_a_typo_stops_it(monkeypatch):
    import ipaddress

    monkeypatch.setenv("TIDEMARK_ALLOWED_SERVER_NETWORKS", "127.0.0.0/8, fd00::/8")
    monkeypatch.setenv("TIDEMARK_DENIED_SERVER_NETWORKS", "10.20.0.0/16")
    app = create_app("testing")
    assert app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] == (ipaddress.ip_network("127.0.0.0/8"),
                                                              ipaddress.ip_network("fd00::/8"))
    assert app.config["TIDEMARK_DENIED_SERVER_NETWORKS"] == (ipaddress.ip_network("10.20.0.0/16"),)
    monkeypatch.setenv("TIDEMARK_DENIED_SERVER_NETWORKS", "10.20.0.0/33")
    with pytest.raises(ConfigError, match=r"TIDEMARK_DENIED_SERVER_NETWORKS: '10.20.0.0/33' is not a network"):
        create_app("testing")
    monkeypatch.delenv("TIDEMARK_DENIED_SERVER_NETWORKS")
    monkeypatch.delenv("TIDEMARK_ALLOWED_SERVER_NETWORKS")
    assert create_app("testing").config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] == ()

import subprocess
import sys
from pathlib import Path

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


def test_the_portal_address_follows_the_bind_address():
    from config import portal_url_for_bind

    assert portal_url_for_bind("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert portal_url_for_bind("tickets.example.com:80") == "http://tickets.example.com"
    assert portal_url_for_bind("[2001:db8::5]:5000") == "http://[2001:db8::5]:5000"
    assert portal_url_for_bind("0.0.0.0:5000", local=True) == "http://127.0.0.1:5000"
    assert portal_url_for_bind("[::]:5000", local=True) == "http://[::1]:5000"
    assert portal_url_for_bind("0.0.0.0:5000").endswith(":5000") and "0.0.0.0" not in portal_url_for_bind("0.0.0.0:5000")
    assert portal_url_for_bind("unix:/run/tidemark.sock") is None


def _portal_url_at_start(tmp_path, **env) -> subprocess.CompletedProcess:
    # A fresh interpreter, because the environment is read at import time; the worker's app, as it
    # is the worker that writes the emails.
    script = "from workers.runtime import get_app; print(get_app().config['TIDEMARK_PORTAL_URL'])"
    full = {"TIDEMARK_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-c", script], env=full, capture_output=True, text=True, check=True)


def test_links_in_email_follow_make_runs_bind_unless_the_portal_url_is_set(tmp_path):
    assert _portal_url_at_start(tmp_path, TIDEMARK_BIND="127.0.0.1:8123").stdout.strip() == "http://127.0.0.1:8123"
    given = _portal_url_at_start(tmp_path, TIDEMARK_BIND="127.0.0.1:8123",
                                 TIDEMARK_PORTAL_URL="https://tickets.example.com")
    assert given.stdout.strip() == "https://tickets.example.com"
    assert _portal_url_at_start(tmp_path).stdout.strip() == "http://127.0.0.1:5000"  # make run's default


def test_production_warns_at_start_when_the_portal_url_is_unset(tmp_path):
    keys = {"TIDEMARK_ENV": "production", "SECRET_KEY": "x" * 32,
            "TIDEMARK_ENCRYPTION_KEY": "bXR4dXZ3eHl6MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG0="}
    unset = _portal_url_at_start(tmp_path, **keys)
    assert "TIDEMARK_PORTAL_URL is not set: links in emails will point at http://127.0.0.1:5000" in unset.stderr
    given = _portal_url_at_start(tmp_path, TIDEMARK_PORTAL_URL="https://tickets.example.com", **keys)
    assert "TIDEMARK_PORTAL_URL" not in given.stderr and given.stdout.strip() == "https://tickets.example.com"


def _mail_host_at_start(tmp_path, **env) -> str:
    script = "from workers.runtime import get_app; print(get_app().config['TIDEMARK_MAIL_HOST'])"
    full = {"TIDEMARK_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-c", script], env=full, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_workers_on_several_machines_write_the_same_mail_host(tmp_path):
    # Our Message-IDs and loop header name the portal's host, not the machine's: a worker tells our
    # own mail by the header a worker on another machine wrote (README, Production deployment).
    portal = {"TIDEMARK_PORTAL_URL": "https://Desk.MSP.example:8443/"}
    assert _mail_host_at_start(tmp_path, **portal) == "desk.msp.example"
    assert _mail_host_at_start(tmp_path, TIDEMARK_MAIL_HOST="mail.msp.example", **portal) == "mail.msp.example"
    import socket

    assert _mail_host_at_start(tmp_path) == (socket.getfqdn() or "tidemark.localdomain")


def test_the_portal_process_freezes_what_it_loaded_for_the_garbage_collector(tmp_path):
    """gunicorn's wsgi:app: full collections no longer walk the app's own objects."""
    script = "import gc, wsgi; print(gc.get_freeze_count() > 10000, wsgi.app.name)"
    env = {"TIDEMARK_INSTANCE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "TIDEMARK_ENV": "development"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["True", "portal"]

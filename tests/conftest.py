"""Shared fixtures: a fresh app and database per test, a real Redis, signed-in clients.

The database is built once per run by the real migrations, then:
- SQLite: each test gets a copy of that file;
- PostgreSQL (TEST_DATABASE_URL set): a scratch database on that server, emptied after each test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from redis import Redis
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from portal.app import create_app
from portal.extensions import db as _db
from portal.models import Client, Mailbox, User
from tests.dovecot import dovecot, dovecot_without_idle, mail_user, oauth_dovecot  # noqa: F401 - a real Dovecot for every test that asks
from tests.graph_server import graph_server, graph_server_session  # noqa: F401 - Microsoft Graph, locally
from tests.oauth_server import microsoft_login, oauth_server, oauth_server_session  # noqa: F401 - an OAuth2 server (Authlib)
from tests.smtp import smtp_server, smtp_server_session  # noqa: F401 - a real SMTP server (aiosmtpd)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CSRF_HEADER = re.compile(r'"X-CSRFToken": "([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """TEST_REDIS_URL when given (it is flushed!), else a private redis-server on a free port."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed and TEST_REDIS_URL is not set (make test installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            Redis.from_url(url).ping()
            break
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis(redis_url):
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()


# --- database ------------------------------------------------------------------------------------


def _migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
    with app.app_context():
        upgrade()
        _db.engine.dispose()


@pytest.fixture(scope="session")
def database(tmp_path_factory):
    """(kind, url or template path) of a database migrated to the latest schema."""
    pg = os.environ.get("TEST_DATABASE_URL")
    if pg:
        server = make_url(pg)
        name = f"tidemark_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
        _migrate(url)
        _no_autovacuum(url)
        yield "postgresql", url
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        template = tmp_path_factory.mktemp("db") / "template.sqlite3"
        _migrate(f"sqlite:///{template}")
        yield "sqlite", str(template)


@pytest.fixture
def database_url(database, tmp_path):
    kind, where = database
    if kind == "sqlite":
        path = tmp_path / "tidemark.sqlite3"
        shutil.copyfile(where, path)
        yield f"sqlite:///{path}"
        return
    yield where
    _empty_postgresql(where)


_EMPTYING = {"by": "delete"}


def _no_autovacuum(url: str) -> None:
    """Tables are emptied with DELETE between tests: without a vacuum their freed space is not
    used again, so new rows are stored after the old ones, as after the TRUNCATE this replaced,
    and not at a place that depends on when autovacuum last ran."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")):
                conn.execute(text(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)'))
    finally:
        engine.dispose()


def _empty_postgresql(url: str) -> None:
    """Every table emptied and every id counting from 1 again, for the next test. DELETE with the
    foreign-key triggers off takes ~20 ms here where TRUNCATE of every table took 0.6-0.8 s (it
    makes new files for each table): minutes of every PostgreSQL run. Turning the triggers off
    needs a superuser; under another role, TRUNCATE."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tables = [f'"{t}"' for t in conn.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"))]
            if _EMPTYING["by"] == "delete":
                try:
                    with conn.begin_nested():
                        conn.execute(text("SET LOCAL session_replication_role = replica"))
                except Exception:  # noqa: BLE001 - not a superuser
                    _EMPTYING["by"] = "truncate"
            if _EMPTYING["by"] == "delete":
                conn.execute(text("; ".join(f"DELETE FROM {t}" for t in tables)))
                conn.execute(text("SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE c.relkind = 'S' AND n.nspname = current_schema()"))
            else:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def app(database_url, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_INSTANCE_DIR", str(tmp_path / "instance"))
    application = create_app(
        "testing",
        SQLALCHEMY_DATABASE_URI=database_url,
        REDIS_URL=redis_url,
        TIDEMARK_QUEUE=f"test-{uuid.uuid4().hex[:8]}",
    )
    with application.app_context():
        yield application
        _db.session.remove()
        _db.engine.dispose()


@pytest.fixture
def db(app):
    return _db


@pytest.fixture
def rotate_keys(app):
    """`flask secrets rotate` to a fresh first key (the old one kept second): returns the new key,
    which alone opens every secret afterwards, and the command's output."""

    def rotate() -> tuple[str, str]:
        new = Fernet.generate_key().decode()
        app.config["TIDEMARK_ENCRYPTION_KEY"] = f"{new},{app.config['TIDEMARK_ENCRYPTION_KEY']}"
        result = app.test_cli_runner().invoke(args=["secrets", "rotate"])
        assert result.exit_code == 0, result.output
        _db.session.expire_all()
        return new, result.output

    return rotate


@pytest.fixture
def sql_statements(app):
    """`with sql_statements() as seen:` lists the SQL statements sent to the database meanwhile
    (the test client's requests included): for bounds on how many a page costs."""
    @contextmanager
    def counting():
        seen: list[str] = []

        def keep(_conn, _cursor, statement, *_args):
            seen.append(statement)

        event.listen(_db.engine, "before_cursor_execute", keep)
        try:
            yield seen
        finally:
            event.remove(_db.engine, "before_cursor_execute", keep)
    return counting


# --- people and clients --------------------------------------------------------------------------

PASSWORD = "correct horse battery"


class World:
    """Factories for MSP trees and users, committed so that HTTP requests see them."""

    def __init__(self, app):
        self.app = app

    def msp(self, name="Acme MSP", code=None, **kw):
        from portal.services import clients, commit

        msp = clients.create_msp(clients.ClientInput(name=name, code=code or "", **kw))
        commit()
        return msp

    def client(self, parent, name, allow=(), waterline="", code=""):
        from portal.services import clients, commit

        c = clients.create_client(
            parent, clients.ClientInput(name=name, allow=list(allow), waterline=waterline, code=code), None
        )
        commit()
        return c

    def user(self, msp, email=None, role="admin", password=PASSWORD):
        from portal.services import commit, users

        u = users.create_user(msp, email or f"{role}-{uuid.uuid4().hex[:6]}@{msp.name.split()[0].lower()}.example",
                              password, role, None)
        commit()
        return u


    def mailbox(self, client, address="support@acme.example", routes=None, password="secret-pw", **values):
        from portal.services import commit
        from portal.services.mailboxes import save_mailbox
        from portal.services.routes import RouteInput

        msp = self.app.extensions["sqlalchemy"].session.get(type(client), client.msp_id)
        route_inputs = None
        if routes is not None:
            route_inputs = [RouteInput(**r) for r in routes]
        values = {"address": address, "host": "127.0.0.1", "username": "support", "password": password, **values}
        mailbox, _ = save_mailbox(msp, client, values, keys=self.app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None,
                                  routes=route_inputs)
        commit()
        return mailbox

    def deliver(self, mailbox, raw: bytes):
        """Store one email as fetched into this mailbox and decide it, like a fetch job does."""
        import uuid

        from portal.inbound.batch import decide_one
        from portal.inbound.context import IngestContext
        from portal.inbound.fetch import store_raw
        from portal.services import commit

        stored = store_raw(mailbox, raw, server_id=uuid.uuid4().hex, folder="INBOX")
        _db.session.flush()
        ctx = IngestContext(mailbox, self.app.config["SECRET_KEY"].encode(), self.app.config["TIDEMARK_MAIL_HOST"])
        result = decide_one(stored, ctx, max_tries=1)
        commit()
        assert result is not None, stored.last_error
        return result


@pytest.fixture
def world(app):
    return World(app)


@pytest.fixture
def msp(world):
    """The Acme MSP, alone: no client, no user."""
    return world.msp("Acme MSP")


@dataclass
class Desk:
    msp: Client
    box: Mailbox
    tom: User
    ana: User
    contoso: Client


@pytest.fixture
def acme(world) -> Desk:
    """Acme MSP: client Contoso (contoso.com), a mailbox that sends no acknowledgements,
    technician tom@acme.example and admin ana@acme.example."""
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    tom = world.user(msp, email="tom@acme.example", role="technician")
    ana = world.user(msp, email="ana@acme.example", role="admin")
    return Desk(msp, box, tom, ana, contoso)


@pytest.fixture
def bcc_desk(world):
    """Acme MSP with a mailbox (desk@acme.example) that routes only Contoso's mail sent in BCC
    and files everything else under the MSP, so that mail from elsewhere waits unprocessed;
    admin ann@acme.example and technician tom@acme.example."""
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="desk@acme.example", acknowledge=False, routes=[
        {"name": "Contoso BCC", "client": contoso, "recipients": ["*"], "senders": ["contoso.com"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    world.user(msp, email="ann@acme.example", role="admin")
    world.user(msp, email="tom@acme.example", role="technician")
    return msp, contoso, box


class Browser:
    """A test client that signs in and sends CSRF tokens the way the pages do."""

    def __init__(self, client):
        self.client = client
        self.token = None

    @staticmethod
    def _fresh_request():
        # Requests reuse the test's app context; in production each request has a fresh `g`
        # (Flask-Login and Flask-WTF cache the user and the CSRF token there).
        from flask import g

        for name in list(g):
            g.pop(name)

    def get(self, url, **kw):
        self._fresh_request()
        resp = self.client.get(url, **kw)
        self._remember_token(resp)
        return resp

    def _remember_token(self, resp):
        body = resp.get_data(as_text=True)
        found = CSRF_FIELD.search(body) or CSRF_HEADER.search(body)
        if found:
            self.token = found.group(1)

    def post(self, url, data=None, htmx=False, token=True, confirmed=True, **kw):
        """`confirmed`: answered "yes" where the page asks first (portal.responses.asks_first)."""
        if self.token is None and token:
            self.get("/sign-in")
        data = dict(data or {})
        headers = dict(kw.pop("headers", {}))
        if token:
            data.setdefault("csrf_token", self.token)
        if confirmed:
            data.setdefault("confirmed", "yes")
        if htmx:
            headers["HX-Request"] = "true"
        self._fresh_request()
        resp = self.client.post(url, data=data, headers=headers, **kw)
        self._remember_token(resp)
        return resp

    def hx_get(self, url, **kw):
        return self.get(url, headers={"HX-Request": "true"}, **kw)

    def sign_in(self, email, password=PASSWORD):
        self.get("/sign-in")
        resp = self.post("/sign-in", {"email": email, "password": password})
        if resp.status_code == 302:
            self.get("/")  # a new session has a new CSRF token
        return resp

    def sign_out(self):
        self.get("/")
        return self.post("/sign-out")


@pytest.fixture
def smtp_gateway(app, smtp_server, redis):
    """The installation's SMTP gateway set to the test SMTP server: mail we send arrives there."""
    from portal.outbound import servers  # noqa: PLC0415 - the app must exist first
    from portal.services import commit  # noqa: PLC0415

    servers.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none"},
                             keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    return smtp_server


@pytest.fixture
def browser(app):
    return Browser(app.test_client())


@pytest.fixture
def make_browser(app):
    return lambda: Browser(app.test_client())

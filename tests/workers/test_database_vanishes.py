"""A worker's machine that vanishes from the network (powered off, cut off) says nothing: its
PostgreSQL backend would hold the sending run's lock, and any open transaction's, until the
system gave up on the connection two hours and more later, and no other worker could send. Both
ends give up within TIDEMARK_DB_DEAD_PEER_SECONDS instead (portal.app). The cut is made for one
connection with iptables, which drops its packets both ways as a dead network does."""

import shutil
import subprocess
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from portal.app import create_app
from portal.extensions import db
from portal.services import database_unreachable
from tests.workers.test_fetch_faults import wait_for
from workers.sending import _SENDER_LOCK, one_sender

DEAD_PEER_SECONDS = 3


@pytest.fixture
def cut(database_url):
    """cut(port): every packet between PostgreSQL and that client port dropped, until the test ends."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection cut off: PostgreSQL only (SQLite has no connection)")
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables (Debian's package iptables) to cut off one connection")
    rules = []

    def drop(port: int) -> None:
        for rule in (["--sport", str(port), "--dport", "5432"], ["--sport", "5432", "--dport", str(port)]):
            rule = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", *rule, "-j", "DROP"]
            done = subprocess.run(["iptables", "-w", "-A", *rule], capture_output=True, text=True)
            if done.returncode:
                pytest.skip(f"iptables could not add a rule here (it needs root): {done.stderr.strip()}")
            rules.append(rule)

    yield drop
    for rule in rules:
        subprocess.run(["iptables", "-w", "-D", *rule], check=True)


@pytest.fixture
def vanishing(app, database_url):
    """The app as a worker's machine that is about to vanish has it."""
    return create_app("testing", SQLALCHEMY_DATABASE_URI=database_url, REDIS_URL=app.config["REDIS_URL"],
                      TIDEMARK_DB_DEAD_PEER_SECONDS=DEAD_PEER_SECONDS, migrations=False)


def sender_lock_is_free() -> bool:
    with db.engine.connect() as conn:
        free = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :id)"), dict(zip(("ns", "id"), _SENDER_LOCK))).scalar()
        if free:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), dict(zip(("ns", "id"), _SENDER_LOCK)))
        conn.commit()
    return free


def test_the_sending_runs_lock_is_freed_when_its_workers_machine_vanishes(app, vanishing, cut):
    assert app.config["TIDEMARK_DB_DEAD_PEER_SECONDS"] == 60  # the default
    with vanishing.app_context():
        with one_sender() as ours:
            assert ours
            with app.app_context():
                assert not sender_lock_is_free()
                port = db.session.execute(text(
                    "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.classid = :ns AND l.objid = :id AND l.granted"),
                    dict(zip(("ns", "id"), _SENDER_LOCK))).scalar()
                db.session.commit()
                cut(port)
                took = wait_for(sender_lock_is_free, timeout=20 * DEAD_PEER_SECONDS, step=0.25)
        # Leaving, the vanished run's unlock meets its dead connection: an outage, not an error.
    assert took < 4 * DEAD_PEER_SECONDS


def test_a_query_to_a_server_that_vanished_fails_in_plain_words_instead_of_hanging(vanishing, cut):
    with vanishing.app_context():
        with db.engine.connect() as conn:
            port = conn.execute(text("SELECT inet_client_port()")).scalar()
            conn.commit()
            cut(port)
            started = time.monotonic()
            with pytest.raises(OperationalError) as lost:
                conn.execute(text("SELECT 1"))
            took = time.monotonic() - started
        db.engine.dispose()
    assert took < 4 * DEAD_PEER_SECONDS
    assert database_unreachable(lost.value).startswith("the database could not be reached (")


def test_both_ends_get_the_setting_and_zero_leaves_the_systems_own(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    shown = {}
    for seconds in (60, 0):
        worker = create_app("testing", SQLALCHEMY_DATABASE_URI=database_url, TIDEMARK_DB_DEAD_PEER_SECONDS=seconds,
                            migrations=False)
        with worker.app_context():
            with db.engine.connect() as conn:
                server = [conn.execute(text(f"SHOW {name}")).scalar() for name in (
                    "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")]
                client = conn.connection.driver_connection.info.get_parameters()
                shown[seconds] = server, client.get("tcp_user_timeout"), client.get("keepalives_idle")
            db.engine.dispose()
    assert shown[60] == (["30", "10", "3", "60000"], "60000", "30")
    assert shown[0][0][3] == "0" and shown[0][0][0] != "30" and shown[0][1:] == (None, None)

"""The LMTP listener (workers.lmtp) driven by the standard library's LMTP client: 250 only after
the commit (and the ticket made), 550 for unknown recipients, 552 over the mailbox's size, 451
while the database or Redis is away and then 250 with the mail stored exactly once; SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from portal.app import create_app
from portal.extensions import db
from portal.models import Message, RawMessage, Ticket
from portal.models.base import utcnow
from portal.services import dashboard as board
from tests.conftest import free_port
from tests.mailfactory import email
from workers.lmtp import build_parser, parse_listen, serve

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def listening(app, listen="127.0.0.1:0"):
    """The listener in a thread of its own (its own event loop), serving `app`."""
    handed: queue.Queue = queue.Queue()
    loop = asyncio.new_event_loop()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(app, listen, threads=2, signals=False, ready=handed.put))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    listener = handed.get(timeout=20)
    try:
        yield listener
    finally:
        loop.call_soon_threadsafe(listener.stopping.set)
        thread.join(timeout=40)


def client(listener) -> smtplib.LMTP:
    host, port = listener.address[:2]
    lmtp = smtplib.LMTP(host, port, timeout=30)
    lmtp.ehlo_or_helo_if_needed()
    return lmtp


def lmtp_box(world, msp, address="support@acme.example", **values):
    values.setdefault("acknowledge", False)
    values.setdefault("status", "active")
    return world.mailbox(msp, address=address, protocol="lmtp", host="", username="", password=None, **values)


def count(model, *where):
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def acme(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return msp


def test_a_pushed_email_is_stored_before_its_250_and_becomes_a_ticket(app, world, acme, redis):
    box = lmtp_box(world, acme)
    raw = email(subject="Printer on fire").replace(b"\n", b"\r\n")  # as an MTA sends it
    with listening(app) as listener:
        lmtp = client(listener)
        before = utcnow()
        assert lmtp.sendmail("mta@relay.example", ["support@acme.example"], raw) == {}
        after = utcnow()
        lmtp.quit()
    stored = db.session.scalars(select(RawMessage)).all()
    assert len(stored) == 1 and stored[0].mailbox_id == box.id and stored[0].raw == raw
    assert stored[0].folder == "LMTP" and before <= stored[0].received_at <= after
    ticket = db.session.scalar(select(Ticket))
    assert ticket is not None and ticket.subject == "Printer on fire" and ticket.mailbox_id == box.id
    # Its time to ticket counts from the DATA's arrival: the ticket was there before the 250.
    today = board.time_to_ticket_today(acme.id, timezone.utc)[box.id]
    assert today.count == 1 and today.p95 <= after - before


def test_recipients_by_address_or_alias_any_case_plus_tags_as_the_mailbox_says(app, world, acme, redis):
    box = lmtp_box(world, acme, aliases=["help@acme.example"], plus_addressing="mixed")
    plain = lmtp_box(world, acme, address="sales@acme.example")
    with listening(app) as listener:
        lmtp = client(listener)
        # Two addresses of one mailbox in one transaction: two 250s, one stored copy.
        lmtp.mail("mta@relay.example")
        assert lmtp.rcpt("Help@ACME.example")[0] == 250
        assert lmtp.rcpt("support+T-1.abcde@acme.example")[0] == 250
        assert lmtp.rcpt("nobody@acme.example") == (550, b"5.1.1 Unknown recipient")
        # Plus addressing off: the tag is part of the address, which no mailbox has.
        assert lmtp.rcpt("sales+x@acme.example")[0] == 550
        assert lmtp.rcpt("sales@acme.example")[0] == 250
        code, _ = lmtp.data(email(subject="three recipients"))
        assert code == 250
        assert [lmtp.getreply()[0] for _ in range(2)] == [250, 250]  # LMTP: one reply per recipient
        lmtp.quit()
    assert count(RawMessage, RawMessage.mailbox_id == box.id) == 1
    assert count(RawMessage, RawMessage.mailbox_id == plain.id) == 1


def test_unknown_draft_and_other_msps_mailboxes_all_read_unknown_recipient(app, world, acme, redis):
    lmtp_box(world, acme)
    world.mailbox(acme, address="draft@acme.example", protocol="lmtp", host="", username="", password=None)
    world.mailbox(acme, address="imap@acme.example", status="active")  # fetched, not pushed
    other = world.msp("Other MSP")
    lmtp_box(world, other, address="theirs@other.example", status="disabled")
    with listening(app) as listener:
        lmtp = client(listener)
        for address in ("draft@acme.example", "imap@acme.example", "theirs@other.example", "nobody@nowhere.example"):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                lmtp.sendmail("mta@relay.example", [address], email())
            assert refused.value.recipients == {address: (550, b"5.1.1 Unknown recipient")}
        lmtp.quit()
    assert count(RawMessage) == 0


def test_mail_over_the_mailbox_size_gets_552_and_is_not_stored(app, world, acme, redis):
    lmtp_box(world, acme, max_message_size=2048)
    lmtp_box(world, acme, address="big@acme.example")
    with listening(app) as listener:
        lmtp = client(listener)
        lmtp.mail("mta@relay.example")
        lmtp.rcpt("support@acme.example")
        lmtp.rcpt("big@acme.example")
        code, message = lmtp.data(email(body="x" * 5000))
        assert (code, message) == (552, b"5.3.4 Message too big for this mailbox")
        assert lmtp.getreply()[0] == 250  # the other mailbox takes it
        lmtp.quit()
    assert count(RawMessage) == 1


def test_the_same_bytes_pushed_again_are_stored_once(app, world, acme, redis):
    lmtp_box(world, acme)
    raw = email(subject="sent twice")
    with listening(app) as listener:
        lmtp = client(listener)
        assert lmtp.sendmail("mta@relay.example", ["support@acme.example"], raw) == {}
        assert lmtp.sendmail("mta@relay.example", ["support@acme.example"], raw) == {}  # the MTA's retry
        lmtp.quit()
    assert count(RawMessage) == 1 and count(Ticket) == 1


def test_redis_away_answers_451_and_stores_nothing(app, world, acme, redis):
    lmtp_box(world, acme)
    away = create_app("testing", SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
                      REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", TIDEMARK_QUEUE=app.config["TIDEMARK_QUEUE"])
    with listening(away) as listener:
        lmtp = client(listener)
        lmtp.mail("mta@relay.example")
        assert lmtp.rcpt("support@acme.example")[0] == 250
        assert lmtp.data(email()) == (451, b"4.3.0 Temporarily unable to accept the message, try again later")
        lmtp.quit()
    assert count(RawMessage) == 0


@contextmanager
def database_away(app):
    """The database refuses the listener for a while, for real: SQLite's write lock held by
    another connection (the listener waits a moment, then gives up); PostgreSQL: the database
    refuses new connections and its open ones are ended."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, timeout=1)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = url.database
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_database_away_answers_451_then_250_once_it_is_back_and_the_mail_is_stored_once(app, world, acme, redis):
    box_id = lmtp_box(world, acme).id
    raw = email(subject="while the database was away")
    db.session.remove()
    # The listener's own app: SQLite waits 0.3 s on a held lock instead of 5.
    listener_app = create_app("testing", SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"],
                              REDIS_URL=app.config["REDIS_URL"], TIDEMARK_QUEUE=app.config["TIDEMARK_QUEUE"],
                              SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, **(
                                  {"connect_args": {"timeout": 0.3}} if "sqlite" in app.config[
                                      "SQLALCHEMY_DATABASE_URI"] else {})})
    with listening(listener_app) as listener:
        with database_away(app):
            lmtp = client(listener)
            lmtp.mail("mta@relay.example")
            code = lmtp.rcpt("support@acme.example")[0]
            if code == 250:  # SQLite: reading goes on under the write lock; the commit cannot
                code = lmtp.data(raw)[0]
            assert code == 451
            lmtp.quit()
        lmtp = client(listener)
        assert lmtp.sendmail("mta@relay.example", ["support@acme.example"], raw) == {}
        lmtp.quit()
    db.session.remove()
    assert count(RawMessage) == 1 and count(RawMessage, RawMessage.mailbox_id == box_id) == 1
    assert count(Message, Message.direction == "in") == 1 and count(Ticket) == 1


def test_the_listener_on_a_unix_socket_ends_cleanly_on_sigterm(app, world, acme, redis, tmp_path):
    lmtp_box(world, acme)
    socket_path = tmp_path / "lmtp.sock"
    env = {**os.environ, "TIDEMARK_ENV": "development", "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"], "TIDEMARK_QUEUE": app.config["TIDEMARK_QUEUE"],
           "TIDEMARK_INSTANCE_DIR": str(tmp_path / "instance"),
           "SECRET_KEY": app.config["SECRET_KEY"], "TIDEMARK_ENCRYPTION_KEY": app.config["TIDEMARK_ENCRYPTION_KEY"]}
    proc = subprocess.Popen([sys.executable, "-m", "workers.lmtp", "--listen", f"unix:{socket_path}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.05)
        lmtp = smtplib.LMTP(str(socket_path), timeout=30)
        assert lmtp.sendmail("mta@relay.example", ["support@acme.example"], email(subject="over a socket")) == {}
        idle = smtplib.LMTP(str(socket_path), timeout=30)
        idle.ehlo_or_helo_if_needed()
        # A transaction under way when SIGTERM comes: half its DATA sent.
        busy = smtplib.LMTP(str(socket_path), timeout=30)
        busy.ehlo_or_helo_if_needed()
        busy.mail("mta@relay.example")
        busy.rcpt("support@acme.example")
        busy.putcmd("data")
        assert busy.getreply()[0] == 354
        body = email(subject="under way at SIGTERM").replace(b"\n", b"\r\n")
        busy.send(body[:40])
        proc.send_signal(signal.SIGTERM)
        assert idle.getreply() == (421, b"4.3.2 Shutting down")  # the idle connection is told
        busy.send(body[40:] + b".\r\n")
        assert busy.getreply() == (250, b"2.0.0 Delivered")  # and the one under way finishes
        assert proc.wait(timeout=30) == 0
        assert not socket_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Not decided there (no worker ran them): stored, with their receive time, waiting for the fetch job.
    stored = db.session.scalars(select(RawMessage)).all()
    assert len(stored) == 2 and all(utcnow() - s.received_at < timedelta(minutes=1) for s in stored)


def test_listen_addresses():
    assert parse_listen("127.0.0.1:2424") == ("127.0.0.1", 2424)
    assert parse_listen("[::1]:24") == ("::1", 24)
    assert parse_listen("unix:/run/tidemark/lmtp.sock") == ("unix", "/run/tidemark/lmtp.sock")
    for wrong in ("127.0.0.1", "host:70000", "unix:relative.sock", ""):
        with pytest.raises(ValueError):
            parse_listen(wrong)
    assert build_parser().parse_args(["--listen", "unix:/x.sock"]).listen == "unix:/x.sock"


def test_a_mailbox_deleted_between_rcpt_and_data_gets_451_not_a_250_for_nothing(app, world, acme, redis):
    from portal.services import mailboxes

    box = lmtp_box(world, acme)
    with listening(app) as listener:
        lmtp = client(listener)
        lmtp.mail("mta@relay.example")
        assert lmtp.rcpt("support@acme.example")[0] == 250
        mailboxes.delete_mailbox(db.session.get(type(box), box.id), actor=None)
        db.session.commit()
        assert lmtp.data(email(subject="too late"))[0] == 451  # the MTA keeps it
        lmtp.quit()
    assert count(RawMessage) == 0


def test_messages_of_several_connections_are_kept_with_one_commit_each_answered_for_itself(app, world, acme, redis):
    """The Keeper's store (portal.inbound.lmtp.keep_many): one transaction for what arrived
    together; per delivery stored, a retry of known bytes, or a mailbox deleted after RCPT."""
    from sqlalchemy import event

    from portal.inbound import lmtp as inbound
    from portal.services import mailboxes

    from portal import jobs

    app.config["TIDEMARK_JOBS_SYNC"] = False  # the fetch jobs wait in Redis: no commit of theirs counted
    box, gone = lmtp_box(world, acme), lmtp_box(world, acme, address="old@acme.example")
    here, there = inbound.accept_recipient("support@acme.example"), inbound.accept_recipient("old@acme.example")
    mailboxes.delete_mailbox(db.session.get(type(gone), gone.id), actor=None)
    db.session.commit()
    first, second = email(subject="first"), email(subject="second")
    commits = []

    def committed(session):
        commits.append(session)

    session = db.session()
    event.listen(session, "after_commit", committed)
    try:
        now = utcnow()
        outcomes = inbound.keep_many([(here, first, now), (here, second, now), (here, first, now), (there, first, now)])
    finally:
        event.remove(session, "after_commit", committed)
    assert outcomes[:3] == [True, True, False] and isinstance(outcomes[3], LookupError)
    assert len(commits) == 1
    assert count(RawMessage, RawMessage.mailbox_id == box.id) == 2 and count(RawMessage) == 2
    assert jobs.queue(redis).job_ids == [f"fetch-mailbox-{box.id}"]  # one deciding for the mailbox
    assert inbound.keep_many([(here, email(subject="third"), utcnow())]) == [True]
    assert inbound.keep_many([(here, second, utcnow())]) == [False]  # the MTA's retry


def test_many_connections_at_once_each_get_their_250_and_every_mail_is_stored_once(app, world, acme, redis):
    lmtp_box(world, acme)
    sent: dict[int, list] = {}

    def push(n, listener):
        lmtp = client(listener)
        sent[n] = [lmtp.sendmail("mta@relay.example", ["support@acme.example"], email(subject=f"c{n} m{i}"))
                   for i in range(10)]
        lmtp.quit()

    with listening(app) as listener:
        pushers = [threading.Thread(target=push, args=(n, listener)) for n in range(6)]
        for t in pushers:
            t.start()
        for t in pushers:
            t.join(timeout=60)
    assert sent == {n: [{}] * 10 for n in range(6)}
    assert count(RawMessage) == 60
    subjects = db.session.scalars(select(RawMessage.raw)).all()
    assert len({raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for raw in subjects}) == 60


def test_an_rcpt_lookup_serves_the_same_address_for_a_moment_then_a_disabled_mailbox_reads_unknown(
        app, world, acme, redis, monkeypatch):
    import workers.lmtp as listener_module
    from portal.inbound import lmtp as inbound

    monkeypatch.setattr(listener_module, "RECIPIENT_SECONDS", 0.5)
    lookups = []
    real = inbound.accept_recipient
    monkeypatch.setattr(inbound, "accept_recipient", lambda address: lookups.append(address) or real(address))
    box = lmtp_box(world, acme)
    with listening(app) as listener:
        lmtp = client(listener)
        for i in range(3):
            assert lmtp.sendmail("mta@relay.example", ["Support@acme.example"], email(subject=f"m{i}")) == {}
        assert len(lookups) == 1  # one database trip for the three RCPTs
        box.status = "disabled"
        db.session.commit()
        time.sleep(0.6)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            lmtp.sendmail("mta@relay.example", ["support@acme.example"], email(subject="after"))
        assert refused.value.recipients["support@acme.example"][0] == 550
        lmtp.quit()
    assert len(lookups) == 2 and count(RawMessage) == 3

"""Fetching through the real worker code from a real Dovecot: nothing lost, nothing doubled."""

import imaplib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Mailbox, MailboxAlert, Message, RawMessage, Ticket
from portal.models.base import utcnow
from portal.services import commit
from portal.inbound.fetch import run_fetch
from portal.transport import open_session
from tests.dovecot import DroppingProxy
from tests.mailfactory import email
from workers.fetch import enqueue_due_fetches, fetch_mailbox

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def acme(world, app, dovecot):
    app.config["TIDEMARK_CA_FILE"] = str(dovecot.ca_file)
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return msp


def make_mailbox(world, msp, dovecot, user, protocol="imap", security="none", **values):
    port = dovecot.port(protocol, security)
    values.setdefault("after_action", "seen" if protocol == "imap" else "keep")
    values.setdefault("status", "active")
    values.setdefault("address", "support@acme.example")
    return world.mailbox(msp, protocol=protocol, security=security,
                         host="127.0.0.1", port=port, username=user.name, password=user.password, **values)


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def on_server(dovecot, user, folder="INBOX"):
    base = dovecot.folder_dir(user, folder)
    return [p for sub in ("new", "cur") for p in (base / sub).glob("*")]


def seen_flags(dovecot, user):
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port) as imap:
        imap.login(user.name, user.password)
        imap.select("INBOX", readonly=True)
        _typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        return [b"\\Seen" in line for line in data if line]


@pytest.mark.parametrize("protocol, security", [("imap", "none"), ("imap", "starttls"), ("imap", "ssl"),
                                                ("pop3", "none"), ("pop3", "starttls"), ("pop3", "ssl")])
def test_fetch_creates_tickets_and_tells_the_server(world, acme, dovecot, mail_user, redis, protocol, security):
    for i in range(3):
        dovecot.deliver(mail_user, email(subject=f"case {i}"))
    after = "seen" if protocol == "imap" else "delete"
    mailbox = make_mailbox(world, acme, dovecot, mail_user, protocol, security, after_action=after)
    report = fetch_mailbox(mailbox.id)
    assert report["fetched"] == 3 and report["outcomes"] == {"created": 3} and report["error"] is None
    assert sorted(t.subject for t in db.session.scalars(select(Ticket))) == ["case 0", "case 1", "case 2"]
    if protocol == "imap":
        assert seen_flags(dovecot, mail_user) == [True, True, True]
    else:
        assert on_server(dovecot, mail_user) == []  # deleted at QUIT
    db.session.refresh(mailbox)
    assert mailbox.last_success_at is not None and mailbox.failure_count == 0
    # A second poll finds nothing new and doubles nothing.
    again = fetch_mailbox(mailbox.id)
    assert again["fetched"] == 0 and count(Ticket) == 3


def test_move_to_a_processed_folder(world, acme, dovecot, mail_user, redis):
    dovecot.deliver(mail_user, email())
    mailbox = make_mailbox(world, acme, dovecot, mail_user, after_action="move", processed_folder="Done")
    fetch_mailbox(mailbox.id)
    assert on_server(dovecot, mail_user) == []
    assert len(on_server(dovecot, mail_user, "Done")) == 1


def test_wrong_password_is_reported_in_plain_words_and_alerts_once_per_streak(world, acme, dovecot, mail_user, redis):
    mailbox = make_mailbox(world, acme, dovecot, mail_user, max_tries=2, alert_recipients=["noc@acme.example"])
    mailbox.password_encrypted = __import__("portal.crypto", fromlist=["x"]).encrypt(
        world.app.config["TIDEMARK_ENCRYPTION_KEY"], "wrong-password")
    commit()
    reports = []
    for _ in range(4):
        reports.append(fetch_mailbox(mailbox.id))
        mailbox.next_poll_at = None
        commit()
    db.session.refresh(mailbox)
    assert "authentication failed" in mailbox.last_error and mail_user.name in mailbox.last_error
    assert "wrong-password" not in mailbox.last_error
    assert mailbox.failure_count == 4
    alerts = db.session.scalars(select(MailboxAlert)).all()
    assert [a.kind for a in alerts] == ["mailbox_failing"] and alerts[0].recipients == ["noc@acme.example"]
    # Fixed: one recovery notice, and the streak is over.
    from portal import crypto

    mailbox.password_encrypted = crypto.encrypt(world.app.config["TIDEMARK_ENCRYPTION_KEY"], mail_user.password)
    commit()
    assert fetch_mailbox(mailbox.id)["error"] is None
    db.session.refresh(mailbox)
    assert mailbox.failure_count == 0 and mailbox.last_error is None
    assert [a.kind for a in db.session.scalars(select(MailboxAlert).order_by(MailboxAlert.id))] == [
        "mailbox_failing", "mailbox_recovered"]


def test_a_server_that_drops_the_connection_mid_fetch_loses_and_doubles_nothing(world, acme, dovecot, mail_user, redis):
    for i in range(12):
        dovecot.deliver(mail_user, email(subject=f"n{i}", body="x" * 3000))
    with DroppingProxy(dovecot.imap_port, after_bytes=20_000) as proxy:
        mailbox = make_mailbox(world, acme, dovecot, mail_user)
        mailbox.port = proxy.port
        commit()
        report = run_fetch(mailbox, open_session=open_session, keys=world.app.config["TIDEMARK_ENCRYPTION_KEY"],
                           secret=b"s", commit=commit, batch=5)
        assert proxy.tripped.is_set()
    assert report.error and "connection" in report.error.lower()
    first_pass = count(Ticket)
    assert 0 < first_pass < 12  # the batches stored before the drop were decided
    mailbox.port = dovecot.imap_port
    mailbox.next_poll_at = None
    commit()
    report = fetch_mailbox(mailbox.id)
    assert count(Ticket) == 12 and count(RawMessage) == 12
    assert seen_flags(dovecot, mail_user) == [True] * 12


class Crash(BaseException):
    """Stands for the worker process being killed: nothing after it runs."""


def test_a_worker_killed_between_the_commit_and_the_server_action_loses_and_doubles_nothing(
        world, acme, dovecot, mail_user, redis):
    for i in range(4):
        dovecot.deliver(mail_user, email(subject=f"k{i}"))
    mailbox = make_mailbox(world, acme, dovecot, mail_user, after_action="delete")
    commits = []

    def commit_then_die():
        commit()
        commits.append(1)
        if count(RawMessage) == 4:  # the bytes are safe; the server has not been told yet
            raise Crash()

    with pytest.raises(Crash):
        run_fetch(mailbox, open_session=open_session, keys=world.app.config["TIDEMARK_ENCRYPTION_KEY"], secret=b"s",
                  commit=commit_then_die)
    db.session.rollback()
    assert count(RawMessage) == 4 and count(Ticket) == 0
    assert len(on_server(dovecot, mail_user)) == 4  # still on the server
    # The restarted worker finishes the server action and the decisions, and fetches nothing twice.
    report = fetch_mailbox(mailbox.id)
    assert report["fetched"] == 0
    assert count(RawMessage) == 4 and count(Ticket) == 4
    assert on_server(dovecot, mail_user) == []


def test_a_changed_uidvalidity_does_not_import_old_mail_again(world, acme, dovecot, mail_user, redis):
    for i in range(3):
        dovecot.deliver(mail_user, email(subject=f"u{i}"))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    fetch_mailbox(mailbox.id)
    dovecot.change_uidvalidity(mail_user)
    dovecot.deliver(mail_user, email(subject="new after the change"))
    report = fetch_mailbox(mailbox.id)
    assert report["fetched"] == 4
    assert report["outcomes"] == {"duplicate": 3, "created": 1}
    assert count(Ticket) == 4


def test_oversized_mail_is_kept_and_shown_as_unprocessed(world, acme, dovecot, mail_user, redis):
    dovecot.deliver(mail_user, email(subject="huge", attachments=[("big.bin", "application/octet-stream",
                                                                   b"\0" * 300_000)]))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    report = run_fetch(mailbox, open_session=open_session, keys=world.app.config["TIDEMARK_ENCRYPTION_KEY"],
                       secret=b"s", commit=commit, max_size=100_000)
    assert report.outcomes == {"unprocessed": 1}
    raw = db.session.scalar(select(RawMessage))
    assert raw.raw is None and raw.size > 300_000
    shown = db.session.scalar(select(Message))
    assert "over the size limit" in shown.trace[0]


def test_the_scheduler_enqueues_due_active_mailboxes_once(world, acme, dovecot, mail_user, redis, app):
    from portal import jobs

    app.config["TIDEMARK_JOBS_SYNC"] = False
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    world.mailbox(acme, address="draft@acme.example")  # drafts are never fetched
    assert enqueue_due_fetches() == 1
    assert enqueue_due_fetches() == 1  # due again, but the job is already waiting
    assert jobs.queue(redis).job_ids == [f"fetch-mailbox-{mailbox.id}"]
    mailbox.next_poll_at = utcnow() + timedelta(minutes=5)
    mailbox.skip_windows = []
    commit()
    redis.flushdb()
    assert enqueue_due_fetches() == 0


def test_skip_window_and_disabled_mailbox_are_not_fetched(world, acme, dovecot, mail_user, redis):
    dovecot.deliver(mail_user, email())
    now = utcnow()
    window = f"{now:%H}:00-{(now + timedelta(hours=1)):%H}:00"
    mailbox = make_mailbox(world, acme, dovecot, mail_user, skip_windows=[window])
    assert "skip window" in fetch_mailbox(mailbox.id)["skipped"]
    mailbox.skip_windows, mailbox.status = [], "disabled"
    commit()
    assert "disabled" in fetch_mailbox(mailbox.id)["skipped"]
    assert count(RawMessage) == 0


def test_two_worker_processes_on_the_same_mailboxes_take_disjoint_batches_and_double_nothing(
        world, acme, dovecot, mail_user, redis, redis_url, app, database_url):
    """Workers on several machines share only the database and Redis: two worker processes, each
    mailbox's fetch queued twice (as after a scheduler tick and a push), one of them reading in a
    reading process, every email stored once, decided once, on one ticket of its own mailbox, ticket numbers from the MSP's one counter."""
    from portal import jobs

    users = [mail_user, dovecot.new_user(), dovecot.new_user()]
    mailboxes = []
    try:
        for k, user in enumerate(users):
            for i in range(30):
                dovecot.deliver(user, email(subject=f"race {k}.{i}", to=(f"support{k}@acme.example",)))
            mailboxes.append(make_mailbox(world, acme, dovecot, user, address=f"support{k}@acme.example"))
        q = jobs.queue(redis)
        for n in (1, 2):
            for mailbox in mailboxes:
                q.enqueue("workers.fetch.fetch_mailbox", mailbox.id, job_id=f"race-{mailbox.id}-{n}")
        env = {**os.environ, "TIDEMARK_ENV": "development", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "TIDEMARK_QUEUE": app.config["TIDEMARK_QUEUE"], "SECRET_KEY": app.config["SECRET_KEY"],
               "TIDEMARK_ENCRYPTION_KEY": app.config["TIDEMARK_ENCRYPTION_KEY"],
               "TIDEMARK_CA_FILE": str(dovecot.ca_file), "TIDEMARK_INSTANCE_DIR": str(Path(database_url[10:]).parent)
               if database_url.startswith("sqlite") else os.environ.get("TIDEMARK_INSTANCE_DIR", "/tmp")}
        # The second reads its mail in a reading process (portal.inbound.reading).
        workers = [subprocess.Popen([sys.executable, "-m", "workers.worker", "--burst", *flags], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for flags in ([], ["--reading-process"])]
        outputs = [w.communicate(timeout=180)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
        assert ["reading process" in output for output in outputs] == [False, True], outputs
        db.session.expire_all()
        for k, (user, mailbox) in enumerate(zip(users, mailboxes)):
            assert count(RawMessage, RawMessage.mailbox_id == mailbox.id) == 30
            subjects = db.session.scalars(select(Ticket.subject).where(Ticket.mailbox_id == mailbox.id)).all()
            assert sorted(subjects) == sorted(f"race {k}.{i}" for i in range(30))
            assert seen_flags(dovecot, user) == [True] * 30
            assert db.session.get(Mailbox, mailbox.id).failure_count == 0
        # Each stored email decided by exactly one of the two: one message, one ticket, one number,
        # one acknowledgement.
        assert count(RawMessage, RawMessage.state == "decided") == 90
        per_raw = (select(Message.raw_message_id).where(Message.raw_message_id.is_not(None))
                   .group_by(Message.raw_message_id).having(func.count() > 1))
        assert count(Message, Message.direction == "in") == 90 and db.session.scalars(per_raw).all() == []
        acknowledged = select(Message.ticket_id).where(Message.direction == "out").group_by(Message.ticket_id)
        assert len(db.session.scalars(acknowledged.having(func.count() == 1)).all()) == 90
        assert sorted(db.session.scalars(select(Ticket.number))) == list(range(1, 91))
    finally:
        for user in users[1:]:
            dovecot.reset(user)


def test_test_connection_keeps_the_answer_and_its_time(world, acme, dovecot, mail_user, app):
    mailbox = make_mailbox(world, acme, dovecot, mail_user, status="draft")
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert ok.exit_code == 0 and "Connected to 127.0.0.1" in ok.output and "INBOX has 0 messages" in ok.output
    db.session.refresh(mailbox)
    assert mailbox.last_test_ok is True and mailbox.last_test_at is not None
    from portal import crypto

    mailbox.password_encrypted = crypto.encrypt(app.config["TIDEMARK_ENCRYPTION_KEY"], "nope-nope")
    commit()
    bad = runner.invoke(args=["mail", "test-connection", "support@acme.example"])
    assert bad.exit_code == 1 and "authentication failed" in bad.output and "nope-nope" not in bad.output
    db.session.refresh(mailbox)
    assert mailbox.last_test_ok is False and "authentication failed" in mailbox.last_test_message


def test_a_shared_mailbox_is_read_with_another_login(world, acme, dovecot, mail_user, redis):
    master = dovecot.add_master_user("helpdesk-robot", "robot-password-1")
    dovecot.deliver(mail_user, email(subject="to the shared box"))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    mailbox.username, mailbox.shared_mailbox = master.name, mail_user.name
    from portal import crypto

    mailbox.password_encrypted = crypto.encrypt(world.app.config["TIDEMARK_ENCRYPTION_KEY"], master.password)
    commit()
    report = fetch_mailbox(mailbox.id)
    assert report["outcomes"] == {"created": 1}
    assert db.session.scalar(select(Ticket)).subject == "to the shared box"


def test_keep_raw_email_as_attachment(world, acme, dovecot, mail_user, redis):
    raw = email(subject="keep me")
    dovecot.deliver(mail_user, raw)
    mailbox = make_mailbox(world, acme, dovecot, mail_user, keep_raw_attachment=True)
    fetch_mailbox(mailbox.id)
    # The customer's mail, not the acknowledgement: on PostgreSQL an unordered select may return
    # either (an UPDATE moves a row to the end of the table).
    message = db.session.scalar(select(Message).where(Message.direction == "in"))
    eml = [a for a in message.attachments if a.filename == "original.eml"]
    assert len(eml) == 1 and eml[0].data == db.session.scalar(select(RawMessage)).raw


def test_a_second_mailbox_of_an_address_that_is_fetched_already_fetches_nothing(app, world, acme, dovecot, mail_user,
                                                                                   redis):
    import ipaddress

    from portal.services.mailboxes import ADDRESS_CLAIMED

    # Two MSPs: the operator allows the loopback network the test's Dovecot listens on.
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)

    first = make_mailbox(world, acme, dovecot, mail_user)
    assert fetch_mailbox(first.id)["error"] is None
    dovecot.deliver(mail_user, email(subject="for the first"))
    beta = world.msp("Beta MSP")
    second = make_mailbox(world, beta, dovecot, mail_user)  # activated untested: it claimed nothing yet
    report = fetch_mailbox(second.id)
    assert report["error"] == ADDRESS_CLAIMED and report["fetched"] == 0
    assert count(Ticket, Ticket.msp_id == beta.id) == 0
    assert fetch_mailbox(first.id)["fetched"] == 1

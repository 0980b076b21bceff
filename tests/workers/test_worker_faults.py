"""The worker and `make run` ride out faults: a Redis outage, a killed child."""

import subprocess
import sys
import time
from pathlib import Path

import os
import signal

import pytest
from redis import Redis
from rq import SimpleWorker
from sqlalchemy import select

from portal import jobs
from portal.extensions import db
from portal.models import Message, RawMessage, Ticket
from portal.services import commit
from portal.outbound.outbox import ask_for_send
from tests.dovecot import DroppingProxy
from tests.soak.servers import PrivateRedis
from tests.mailfactory import email
from tests.workers.test_fetch import acme, count, make_mailbox  # noqa: F401 - the fixture and helpers
from tests.workers.test_fetch_faults import children_of, wait_for, worker_env
from workers.fetch import enqueue_due_fetches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


def test_the_worker_rides_out_a_redis_outage_and_works_on_after_it(
        world, app, acme, dovecot, mail_user, database_url, private_redis, tmp_path):  # noqa: F811
    app.config["REDIS_URL"] = private_redis.url
    app.config["TIDEMARK_JOBS_SYNC"] = False
    dovecot.deliver_many(mail_user, [email(subject=f"r{i}", body="x" * 2000) for i in range(20)])
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    connection = Redis.from_url(private_redis.url)
    log = open(tmp_path / "worker.log", "w")
    with DroppingProxy(dovecot.imap_port, after_bytes=4000, mode="stall") as proxy:
        mailbox.port = proxy.port
        commit()
        enqueue_due_fetches()
        worker = subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  env=worker_env(app, database_url, private_redis.url, dovecot))
        try:
            wait_for(proxy.tripped.is_set, timeout=30)  # a fetch is under way
            private_redis.stop()
            proxy.close()  # the fetch ends while Redis is away
            time.sleep(6)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            private_redis.start()
            mailbox.port = dovecot.imap_port
            mailbox.next_poll_at = None
            commit()
            enqueue_due_fetches()  # Redis came back empty: the next poll
            wait_for(lambda: count(Ticket) == 20 or db.session.rollback(), timeout=60, step=0.3)
            assert worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()
    output = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, output
    assert count(RawMessage) == 20
    # An expected fault: told in plain lines (the worker's, its scheduler's), not as tracebacks.
    assert "Traceback" not in output and "Redis went away" in output, output


# --- the sending run ---------------------------------------------------------------------------------


@pytest.fixture
def sending(app, world, smtp_server, redis):
    from portal.outbound import servers as outbound_svc

    app.config["TIDEMARK_JOBS_SYNC"] = False
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, response_address="help@acme.example")
    return lambda port: outbound_svc.save_smtp_server({"host": "127.0.0.1", "port": port, "security": "none"},
                                                      keys=app.config["TIDEMARK_ENCRYPTION_KEY"]), box


def ask_for_a_send_run():
    """As the fetch job does after deciding mail (acknowledgements wait in the outbox)."""
    ask_for_send()
    commit()


def test_a_failed_send_run_does_not_block_the_next(app, world, sending, smtp_server, redis):
    gateway, box = sending
    gateway(smtp_server.port)
    commit()
    q = jobs.queue(redis)
    q.enqueue("workers.maintenance.prune_sign_in_failures", "an argument too many", job_id="send-outbox",
              failure_ttl=300)
    SimpleWorker([q], connection=redis).work(burst=True)
    assert q.fetch_job("send-outbox").is_failed
    world.deliver(box, email(sender="alice@contoso.com"))
    ask_for_a_send_run()
    assert q.job_ids == ["send-outbox"]
    SimpleWorker([q], connection=redis).work(burst=True)
    assert len(smtp_server.messages) == 1


def test_a_killed_send_run_frees_the_outbox_within_the_lock_ttl_and_mail_goes_out_once(
        app, world, sending, smtp_server, redis, redis_url, database_url, tmp_path):
    gateway, box = sending
    app.config["TIDEMARK_LOCK_SECONDS"] = 3
    q = jobs.queue(redis)
    key = jobs.LOCK_PREFIX + "send-outbox"
    log = open(tmp_path / "worker.log", "w")
    with DroppingProxy(smtp_server.port, after_bytes=10, mode="stall") as proxy:
        gateway(proxy.port)
        world.deliver(box, email(sender="alice@contoso.com"))
        ask_for_a_send_run()
        assert q.job_ids == ["send-outbox"]
        worker = subprocess.Popen([sys.executable, "-m", "workers.worker"], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  env=worker_env(app, database_url, redis_url, None, TIDEMARK_LOCK_SECONDS="3"))
        try:
            wait_for(lambda: proxy.tripped.is_set() and redis.exists(key), timeout=30)  # stuck in the greeting
            for pid in [*children_of(worker.pid), worker.pid]:
                os.kill(pid, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait()
            log.close()
    gateway(smtp_server.port)
    commit()
    assert wait_for(lambda: not redis.exists(key), timeout=5) <= 3.5
    time.sleep(0.5)
    ask_for_a_send_run()
    assert q.job_ids == ["send-outbox"], (tmp_path / "worker.log").read_text()
    SimpleWorker([q], connection=redis).work(burst=True)
    assert len(smtp_server.messages) == 1
    db.session.expire_all()
    assert db.session.scalar(select(Message.delivery).where(Message.direction == "out")) == "sent"


def test_a_send_run_killed_after_the_servers_250_is_not_sent_again_but_marked_uncertain(
        app, world, sending, smtp_server, redis, redis_url, database_url, tmp_path):
    """SMTP cannot be asked whether a message arrived: a run that died between the server's 250 and
    its own record of it leaves the message "sending", and the next run must not send it again."""
    from sqlalchemy import func

    from portal.models import AutoMailLog
    from workers.sending import send_due

    gateway, box = sending
    gateway(smtp_server.port)
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    world.deliver(box, email(sender="bob@contoso.com", subject="Scanner"))
    ask_for_a_send_run()
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.run([sys.executable, "-m", "workers.worker", "--burst"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, timeout=60,
                                env=worker_env(app, database_url, redis_url, None, TIDEMARK_FAULT_AT="after-send:1"))
    assert worker.returncode == -signal.SIGKILL, (tmp_path / "worker.log").read_text()
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"]]
    db.session.expire_all()
    assert [m.delivery for m in db.session.scalars(select(Message).where(Message.direction == "out")
                                                   .order_by(Message.id))] == ["sending", "queued"]

    redis.delete(jobs.LOCK_PREFIX + "send-outbox")  # as its lifetime running out would (the test above)
    assert send_due() == {"uncertain": 1, "sent": 1}
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"], ["bob@contoso.com"]]
    db.session.expire_all()
    first = db.session.scalar(select(Message).where(Message.direction == "out", Message.ticket_id == ticket.id))
    assert first.delivery == "uncertain" and first.delivery_note.startswith("may have been sent")
    assert first.message_id == smtp_server.messages[0].message["Message-ID"]  # committed before the hand-over
    assert db.session.scalar(select(func.count()).select_from(AutoMailLog)) == 2  # the loop guard counts it
    assert send_due() == {} and len(smtp_server.messages) == 2


def test_mail_its_server_accepted_as_the_database_went_away_is_recorded_when_it_is_back_and_sent_once(
        app, world, sending, smtp_server, redis, database_url, monkeypatch):
    """Found by the fault harness: the commit after the server's 250 failed, the message stayed
    queued, and the next run sent it a second time."""
    import threading

    from sqlalchemy import func
    from sqlalchemy.engine import make_url

    from portal.app import create_app
    from portal.models import AutoMailLog
    from tests.soak.servers import DatabaseGate
    from workers import sending as sending_module
    from workers.sending import send_due

    if not database_url.startswith("postgresql"):
        pytest.skip("cuts the database's TCP connection through a gate: PostgreSQL only (SQLite has none)")
    gateway, box = sending
    gateway(smtp_server.port)
    world.deliver(box, email(sender="alice@contoso.com"))  # its acknowledgement waits in the outbox
    url = make_url(database_url)
    gate = DatabaseGate((url.host or "127.0.0.1", url.port or 5432))
    config = {k: app.config[k] for k in ("REDIS_URL", "TIDEMARK_QUEUE", "TIDEMARK_ENCRYPTION_KEY", "SECRET_KEY")}
    gated = create_app("testing", SQLALCHEMY_DATABASE_URI=url.set(host="127.0.0.1", port=gate.port)
                       .render_as_string(hide_password=False), TIDEMARK_JOBS_SYNC=False, **config)
    # The moment the server has kept the message, before its 250, the database goes away for 3 s.
    smtp_server.on_message = lambda: (gate.refuse(), threading.Timer(3, gate.open).start())
    monkeypatch.setattr(sending_module, "RECORD_RETRY_SECONDS", 0.5)
    try:
        with gated.app_context():
            send_due()
            smtp_server.on_message = None
            assert send_due() == {}  # nothing is due any more
            db.session.remove()
            db.engine.dispose()
    finally:
        gate.close()
    assert len(smtp_server.messages) == 1
    db.session.expire_all()
    out = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert (out.delivery, out.message_id) == ("sent", smtp_server.messages[0].message["Message-ID"])
    assert db.session.scalar(select(func.count()).select_from(AutoMailLog)) == 1  # the loop guard's log too


def test_two_send_runs_at_once_send_each_mail_once(app, world, sending, smtp_server, redis):
    """The Redis lock gone (a restart) while a run sends: a second run must not send the same mail."""
    import threading

    from workers.sending import send_due

    gateway, box = sending
    gateway(smtp_server.port)
    for i in range(120):
        world.deliver(box, email(sender=f"user{i}@contoso.com", subject=f"case {i}"))
    key = jobs.LOCK_PREFIX + "send-outbox"
    results = {}

    def first_run():
        with app.app_context():
            results["first"] = send_due()

    runner = threading.Thread(target=first_run)
    runner.start()
    wait_for(lambda: len(smtp_server.messages) >= 5, timeout=30, step=0.01)
    redis.delete(key)  # as a Redis restart would
    results["second"] = send_due()
    runner.join(timeout=60)
    sent = sorted(r.rcpt_tos[0] for r in smtp_server.messages)
    assert sent == sorted(f"user{i}@contoso.com" for i in range(120)), results
    assert "skipped" in results["second"]


def test_the_cron_scheduler_rides_out_a_redis_outage(app, database_url, private_redis, tmp_path):
    from rq import Queue

    env = worker_env(app, database_url, private_redis.url)
    connection = Redis.from_url(private_redis.url)
    q = Queue(app.config["TIDEMARK_QUEUE"], connection=connection)
    log = open(tmp_path / "cron.log", "w")
    cron = subprocess.Popen([sys.executable, "-m", "workers.cron"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: q.count >= 3, timeout=30)  # its first tick
        private_redis.stop()
        time.sleep(12)  # longer than its ticks (10 s)
        assert cron.poll() is None, (tmp_path / "cron.log").read_text()
        private_redis.start()  # empty: nothing of before survives
        wait_for(lambda: q.count >= 1, timeout=60, step=0.5)
        assert cron.poll() is None
    finally:
        cron.terminate()
        cron.wait(timeout=30)
        log.close()
    assert cron.returncode == 0, (tmp_path / "cron.log").read_text()

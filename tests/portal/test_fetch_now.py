""""Fetch now" on a mailbox's page and in the mailbox list: queued as a job (inline here,
TIDEMARK_JOBS_SYNC), the same fetch and lock as the schedule's, against a real Dovecot; the page
asks for the outcome until the job has told it."""

import json
import logging
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.fetch_now import AGAIN_PREFIX, AGAIN_SECONDS, ASKED_PREFIX, SLOW_SECONDS, WAIT_SECONDS
from portal.inbound.health import fetch_lock
from portal.jobs import exclusive
from portal.models import Ticket
from portal.services import commit
from tests.dovecot import unused_port
from tests.mailfactory import email


def _box(app, world, msp, dovecot, mail_user, **values):
    app.config["TIDEMARK_CA_FILE"] = str(dovecot.ca_file)
    world.client(msp, "Contoso", allow=["contoso.com"])
    values = {"status": "active", "protocol": "imap", "security": "none", "host": "127.0.0.1",
              "port": dovecot.port("imap", "none"), "username": mail_user.name, "password": mail_user.password,
              "after_action": "seen", "poll_interval": 3600, **values}
    return world.mailbox(msp, address="support@acme.example", **values)


def _technician(world, msp, make_browser):
    world.user(msp, email="tom@acme.example", role="technician")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    return tom


def test_a_technician_fetches_now_and_sees_how_many_tickets_it_made(
        app, world, msp, dovecot, mail_user, make_browser, smtp_gateway, redis):
    assert app.config["TIDEMARK_JOBS_SYNC"]
    box = _box(app, world, msp, dovecot, mail_user)
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    dovecot.deliver(mail_user, email(sender="bob@contoso.com", subject="Scanner", message_id="<s1@contoso.com>"))
    tom = _technician(world, msp, make_browser)
    page = tom.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Fetch now" in page and "Test connection" not in page  # a technician fetches, only admins test
    answer = tom.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
    # The answer is rendered before the job runs: it waits, and asks again.
    assert "Fetching…" in answer and f'hx-get="/mailboxes/{box.id}/fetch"' in answer
    assert db.session.scalar(select(func.count(Ticket.id))) == 2  # the job ran after the commit
    done = tom.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
    assert "Done: fetched 2, 2 new tickets" in done and "hx-get" not in done  # done: it stops asking
    assert sorted(m.rcpt_tos[0] for m in smtp_gateway.messages) == ["alice@contoso.com", "bob@contoso.com"]
    # The list shows the last outcome too, with its own button.
    listed = tom.get("/mailboxes").get_data(as_text=True)
    assert "Done: fetched 2, 2 new tickets" in listed and f'action="/mailboxes/{box.id}/fetch"' in listed
    # Again, once the pause between two asks is over: nothing new.
    redis.delete(AGAIN_PREFIX + str(box.id))
    tom.post(f"/mailboxes/{box.id}/fetch", htmx=True)
    assert "Done: fetched 0, 0 new tickets" in tom.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)


def test_without_script_the_button_posts_and_comes_back_to_the_page_with_the_outcome(
        app, world, msp, admin, dovecot, mail_user, smtp_gateway, redis):
    box = _box(app, world, msp, dovecot, mail_user)
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    resp = admin.post(f"/mailboxes/{box.id}/fetch", {"next": "/mailboxes"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/mailboxes")
    assert "Done: fetched 1, 1 new ticket<" in admin.get("/mailboxes").get_data(as_text=True)
    # A `next` off the site is not followed.
    resp = admin.post(f"/mailboxes/{box.id}/fetch", {"next": "https://evil.example/"})
    assert resp.headers["Location"].endswith(f"/mailboxes/{box.id}")


def test_a_server_that_cannot_be_reached_is_told_in_plain_words(
        app, world, msp, admin, dovecot, mail_user, smtp_gateway, redis):
    box = _box(app, world, msp, dovecot, mail_user, port=unused_port())
    admin.post(f"/mailboxes/{box.id}/fetch", htmx=True)
    done = admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
    assert "The fetch failed: " in done and "127.0.0.1" in done and "Traceback" not in done


def test_a_fetch_under_way_is_not_run_twice(app, world, msp, admin, dovecot, mail_user, smtp_gateway, redis):
    box = _box(app, world, msp, dovecot, mail_user)
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    with exclusive(fetch_lock(box.id)) as mine:
        assert mine
        admin.post(f"/mailboxes/{box.id}/fetch", htmx=True)
        done = admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
    assert "a fetch of support@acme.example is under way" in done
    assert db.session.scalar(select(func.count(Ticket.id))) == 0


def test_a_draft_is_not_fetched_and_others_mailboxes_are_out_of_reach(
        app, world, msp, admin, dovecot, mail_user, redis):
    box = _box(app, world, msp, dovecot, mail_user, status="draft")
    assert "Fetch now" not in admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    refused = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
    assert "Not fetched: the mailbox support@acme.example is a draft" in refused and "hx-get" not in refused
    other = world.msp("Other MSP")
    theirs = world.mailbox(other, address="help@other.example", status="active")
    commit()
    assert admin.post(f"/mailboxes/{theirs.id}/fetch", htmx=True).status_code == 404
    assert admin.hx_get(f"/mailboxes/{theirs.id}/fetch").status_code == 404
    refused = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True, token=False)  # CSRF: htmx reloads the page
    assert refused.status_code == 400 and refused.headers["HX-Refresh"] == "true"
    assert not re.search(r"Done: ", admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True))


def test_a_fetch_no_worker_takes_says_what_to_check(app, world, msp, admin, dovecot, mail_user, redis):
    box = _box(app, world, msp, dovecot, mail_user)
    app.config["TIDEMARK_JOBS_SYNC"] = False  # queued in Redis, and no worker here takes it
    try:
        answer = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
        assert "Fetching…" in answer
        assert "Fetching…" in admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
        key = ASKED_PREFIX + str(box.id)
        state = json.loads(redis.get(key))
        redis.set(key, json.dumps({**state, "asked": time.time() - SLOW_SECONDS - 1}))
        later = admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
        assert "Still waiting for a worker to start the fetch" in later and "hx-get" in later  # it keeps asking
        assert 'hx-trigger="load delay:2s"' in later
        redis.set(key, json.dumps({**state, "asked": time.time() - WAIT_SECONDS - 1}))
        given_up = admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
        assert "No outcome after 5 minutes" in given_up and "hx-get" not in given_up  # it stops asking
        assert "disabled" not in given_up  # and the button can be pressed again
    finally:
        Queue(app.config["TIDEMARK_QUEUE"], connection=redis).empty()


def test_fetch_now_is_queued_with_the_scheduled_fetchs_options(app, world, msp, admin, dovecot, mail_user, redis):
    """A fetch of a slow server runs as long as a scheduled one may (job_timeout), and a failed
    one is kept only briefly: the same options as the schedule's."""
    box = _box(app, world, msp, dovecot, mail_user)
    app.config["TIDEMARK_JOBS_SYNC"] = False  # queued in Redis, read back from there
    q = Queue(app.config["TIDEMARK_QUEUE"], connection=redis)
    try:
        admin.post(f"/mailboxes/{box.id}/fetch", htmx=True)
        job = q.fetch_job(f"fetch-now-{box.id}")
        assert job is not None and job.func_name == "workers.fetch.fetch_mailbox_now"
        assert (job.timeout, job.failure_ttl, job.result_ttl) == (3600, 300, 0)
    finally:
        q.empty()


def test_a_second_fetch_within_the_pause_is_refused_with_the_time_of_the_first(
        app, world, msp, admin, dovecot, mail_user, smtp_gateway, redis):
    msp.timezone = "Pacific/Auckland"
    box = _box(app, world, msp, dovecot, mail_user)
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    admin.post(f"/mailboxes/{box.id}/fetch", htmx=True)
    assert db.session.scalar(select(func.count(Ticket.id))) == 1
    dovecot.deliver(mail_user, email(sender="bob@contoso.com", subject="Scanner", message_id="<s1@contoso.com>"))
    again = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
    asked = float(redis.get(AGAIN_PREFIX + str(box.id)))
    at = datetime.fromtimestamp(asked, ZoneInfo("Pacific/Auckland")).strftime("%H:%M")
    assert f"Not fetched: already asked at {at}; support@acme.example is fetched at most once every 30 seconds" in again
    assert db.session.scalar(select(func.count(Ticket.id))) == 1  # not fetched again
    assert 0 < redis.ttl(AGAIN_PREFIX + str(box.id)) <= AGAIN_SECONDS
    redis.delete(AGAIN_PREFIX + str(box.id))  # the pause is over
    admin.post(f"/mailboxes/{box.id}/fetch", htmx=True)
    assert db.session.scalar(select(func.count(Ticket.id))) == 2


def test_waiting_for_the_outcome_uses_the_apps_redis_connection(app, world, msp, admin, dovecot, mail_user, redis,
                                                                monkeypatch):
    box = _box(app, world, msp, dovecot, mail_user)
    redis.set(ASKED_PREFIX + str(box.id), json.dumps({"done": False, "asked": time.time()}))
    admin.hx_get(f"/mailboxes/{box.id}/fetch")
    made = []
    monkeypatch.setattr(Redis, "from_url", classmethod(lambda cls, *a, **kw: made.append(a) or Redis(*a, **kw)))
    for _ in range(3):
        assert "Fetching…" in admin.hx_get(f"/mailboxes/{box.id}/fetch").get_data(as_text=True)
    assert made == []  # no new client, no new pool of connections, per poll


def test_redis_away_is_told_in_plain_words_and_its_detail_logged(app, world, msp, admin, dovecot, mail_user, redis,
                                                                 caplog):
    box = _box(app, world, msp, dovecot, mail_user)
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{unused_port()}/0"
    with caplog.at_level(logging.WARNING, logger="portal.inbound.fetch_now"):
        refused = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
    assert "Not fetched: the job queue (Redis) cannot be reached, so the fetch could not be queued" in refused
    assert "Connection" not in refused and "Errno" not in refused and "127.0.0.1" not in refused
    assert "Redis cannot be reached: Error 111 connecting to 127.0.0.1" in caplog.text  # the detail, for the admin

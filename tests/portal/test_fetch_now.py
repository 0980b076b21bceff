""""Fetch now" on a mailbox's page and in the mailbox list: queued as a job (inline here,
TIDEMARK_JOBS_SYNC), the same fetch and lock as the schedule's, against a real Dovecot; the page
asks for the outcome until the job has told it."""

import json
import re
import time

from rq import Queue
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.fetch_now import ASKED_PREFIX, SLOW_SECONDS
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
    # Again: nothing new.
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
    assert admin.post(f"/mailboxes/{box.id}/fetch", htmx=True, token=False).status_code in (302, 400)  # CSRF
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
    finally:
        Queue(app.config["TIDEMARK_QUEUE"], connection=redis).empty()

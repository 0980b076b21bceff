"""The dashboard: open work by client and status, failing mailboxes, the job queue and its
workers as Redis sees them, unprocessed mail; scoped to the MSP and refreshed as a fragment."""

import re
from datetime import timedelta

import pytest
from rq import Worker

from portal.extensions import db
from portal.jobs import queue
from portal.models.base import utcnow
from portal.services import commit
from portal.services import dashboard as board
from tests.mailfactory import email


def figure(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">\s*(?:<strong>)?([^<]*)<', page)
    assert found, f"no #{element_id} on the page"
    return found.group(1).strip()


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="ana@acme.example")
    return msp, contoso, fabrikam, box


def test_open_tickets_by_client_and_status_link_into_the_filtered_list(world, browser, desk):
    _msp, contoso, fabrikam, box = desk
    for i in range(3):
        world.deliver(box, email(sender="alice@contoso.com", subject=f"contoso {i}"))
    waiting = world.deliver(box, email(sender="bob@fabrikam.com", subject="fabrikam waits")).ticket
    closed = world.deliver(box, email(sender="bob@fabrikam.com", subject="fabrikam done")).ticket
    waiting.status, closed.status = "waiting", "closed"
    commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert figure(page, "tile-open") == "4"  # closed is not open
    assert f'href="/tickets?client={contoso.id}&amp;status=new"' in page
    assert 'aria-label="3 new at Contoso"' in page and 'aria-label="1 waiting at Fabrikam"' in page
    assert page.index("Contoso") < page.index("Fabrikam")  # the busiest client first
    for i in range(3):
        world.deliver(box, email(sender="bob@fabrikam.com", subject=f"fabrikam {i}"))
    page = browser.get("/").get_data(as_text=True)
    assert page.index(">Fabrikam<") < page.index(">Contoso<")  # now Fabrikam has more
    assert figure(page, "tile-open") == "7" and 'aria-label="3 new at Fabrikam"' in page
    listed = browser.get(f"/tickets?client={fabrikam.id}&status=waiting").get_data(as_text=True)
    assert "fabrikam waits" in listed and "contoso 0" not in listed


def test_failing_mailboxes_and_unprocessed_mail_are_counted(world, browser, desk):
    msp, _contoso, _fabrikam, box = desk
    since = utcnow() - timedelta(hours=2)
    box.status, box.failure_count, box.failing_since = "active", 4, since
    box.last_error = "login refused: wrong password"
    strict = world.mailbox(msp, address="strict@acme.example", acknowledge=False, routes=[
        {"name": "BCC", "client": msp, "recipients": ["*"], "senders": ["contoso.com"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    db.session.commit()
    # Only BCC'd, from a sender no wildcard route names: waits as unprocessed.
    world.deliver(strict, email(to=["someone@elsewhere.example"], sender="x@elsewhere.example"))
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert figure(page, "tile-failing") == "1"
    assert "login refused: wrong password" in page and f'href="/mailboxes/{box.id}"' in page
    assert ">4<" in page  # failed polls
    assert figure(page, "tile-unprocessed") == "1"


def test_queue_depth_failed_scheduled_and_worker_heartbeat_come_from_redis(app, browser, desk, redis):
    q = queue(redis)
    for _ in range(3):
        q.enqueue("workers.maintenance.prune_sign_in_failures")
    q.enqueue_in(timedelta(minutes=10), "workers.maintenance.prune_sign_in_failures")
    broken = q.enqueue("workers.maintenance.prune_sign_in_failures")
    q.remove(broken)
    q.failed_job_registry.add(broken, exc_string="Traceback: boom")
    worker = Worker([q], connection=redis, name="tidemark-test-worker")
    worker.register_birth()
    worker.heartbeat()
    browser.sign_in("ana@acme.example")
    try:
        page = browser.get("/").get_data(as_text=True)
    finally:
        worker.register_death()
    assert figure(page, "jobs-queued") == "3"
    assert figure(page, "jobs-failed") == "1"
    assert figure(page, "jobs-scheduled") == "1"
    assert "tidemark-test-worker" in page and "No worker listens" not in page
    assert worker.last_heartbeat.strftime("%Y-%m-%d %H:%M") in page  # UTC: the user has no time zone
    # A worker on another queue is not ours to count.
    other = Worker(["someone-else"], connection=redis, name="elsewhere-worker")
    other.register_birth()
    try:
        again = browser.get("/").get_data(as_text=True)
    finally:
        other.register_death()
    assert "elsewhere-worker" not in again and "No worker listens on the queue" in again


def test_redis_unreachable_is_said_plainly_and_the_page_still_answers(app, browser, desk):
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    browser.sign_in("ana@acme.example")
    resp = browser.get("/")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "Redis unreachable" in page and "Open tickets by client" in page


def test_the_figures_refresh_as_a_fragment(world, browser, desk):
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert 'hx-trigger="every 30s"' in page and "No open tickets" in page
    assert "Every active mailbox fetched without error" in page
    world.deliver(desk[3], email(sender="alice@contoso.com"))
    fragment = browser.hx_get("/").get_data(as_text=True)
    assert "<html" not in fragment and "clients in your tree" not in fragment
    assert figure(fragment, "tile-open") == "1" and "Contoso" in fragment


def test_another_msps_tickets_and_mailboxes_are_not_counted(world, make_browser, desk):
    _msp, _contoso, _fabrikam, box = desk
    world.deliver(box, email(sender="alice@contoso.com"))
    box.status, box.failure_count, box.last_error = "active", 2, "timed out"
    db.session.commit()
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    page = eve.get("/").get_data(as_text=True)
    assert figure(page, "tile-open") == "0" and figure(page, "tile-failing") == "0"
    assert "Contoso" not in page and "timed out" not in page


def test_fetch_lag_reads_in_words():
    assert board.in_words(timedelta(seconds=20)) == "less than a minute"
    assert board.in_words(timedelta(minutes=1, seconds=59)) == "1 minute"
    assert board.in_words(timedelta(hours=5, minutes=3)) == "5 hours"
    assert board.in_words(timedelta(days=2, hours=23)) == "2 days"


def test_a_mailbox_that_misses_its_polls_is_stalled_on_the_list_its_page_and_the_dashboard(world, browser, desk, redis):
    from portal.jobs import exclusive

    msp, _contoso, _fabrikam, box = desk
    now = utcnow()
    # Polled every minute; the poll due five minutes ago has not completed (the worker is gone).
    box.status, box.poll_interval = "active", 60
    box.last_poll_at = box.last_success_at = now - timedelta(minutes=6)
    box.next_poll_at = now - timedelta(minutes=5)
    fresh = world.mailbox(msp, address="fresh@acme.example", acknowledge=False, status="active")
    db.session.commit()
    browser.sign_in("ana@acme.example")
    listing = browser.get("/mailboxes").get_data(as_text=True)
    rows = {r.split('">', 1)[0]: r for r in listing.split('<tr class="state-')[1:]}
    assert "support@acme.example" in rows["stalled"] and "is the worker running?" in rows["stalled"]
    assert "fresh@acme.example" in rows["not-fetched-yet"]  # activated just now: not stalled
    assert "is the worker running?" in browser.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "is the worker running?" not in browser.get(f"/mailboxes/{fresh.id}").get_data(as_text=True)
    page = browser.get("/").get_data(as_text=True)
    assert figure(page, "tile-failing") == "1" and "failing or stalled" in page
    assert 'class="badge late">stalled<' in page and "is the worker running?" in page
    # A long fetch (a first import) is under way: its lock lives, so the mailbox is not stalled.
    with exclusive(f"fetch-mailbox-{box.id}", connection=redis):
        assert figure(browser.get("/").get_data(as_text=True), "tile-failing") == "0"
        assert 'state-stalled' not in browser.get("/mailboxes").get_data(as_text=True)
    # A poll completes: healthy again. A mailbox never polled since its activation long ago is stalled.
    box.last_poll_at, box.next_poll_at = now, now + timedelta(seconds=60)
    fresh.next_poll_at = now - timedelta(minutes=10)
    db.session.commit()
    listing = browser.get("/mailboxes").get_data(as_text=True)
    rows = {r.split('">', 1)[0]: r for r in listing.split('<tr class="state-')[1:]}
    assert "support@acme.example" in rows["healthy"]
    assert "fresh@acme.example" in rows["stalled"] and "since it was activated" in rows["stalled"]


def test_a_worker_rq_named_with_a_uuid_shows_as_its_machine_and_process(browser, desk, redis):
    q = queue(redis)
    worker = Worker([q], connection=redis)  # no name given: RQ makes up a UUID
    assert re.fullmatch(r"[0-9a-f]{32}", worker.name)
    worker.register_birth()
    browser.sign_in("ana@acme.example")
    try:
        page = browser.get("/").get_data(as_text=True)
    finally:
        worker.register_death()
    assert worker.name not in page
    assert f"<td>{worker.hostname}, process {worker.pid}</td>" in page
    assert board.worker_name("tidemark-web-1", "host", 12) == "tidemark-web-1"  # a given name stays

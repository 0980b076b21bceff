"""The ticket page and the list stay live: what happens elsewhere (mail fetched, a colleague's
change, the sender job) shows on the open page without a reload."""

import time

import pytest
from playwright.sync_api import expect

from portal import live
from portal.services import commit, ticket_replies
from portal.services import tickets as svc
from tests.conftest import PASSWORD
from tests.mailfactory import email
from tests.portal.conftest import fresh
from workers.sending import send_due

pytestmark = pytest.mark.e2e

SHOWS = 15_000  # ms: generous, the machine may be busy; nothing here measures how fast


@pytest.fixture
def desk(app, world, acme, smtp_gateway, redis):
    app.config["TIDEMARK_JOBS_SYNC"] = False  # the sender job runs when the test says
    app.config["TIDEMARK_LIVE_HEARTBEAT_SECONDS"] = 2
    acme.ana.name = "Ana"
    commit()
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer",
                                           message_id="<p1@contoso.com>")).ticket
    return acme, ticket


def sign_in(page, live_server, address):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def wait_for_stream(redis, channel, count=1):
    """Until the page's stream listens: what is published before then is not missed by the page
    (it catches up on reconnecting), but this test would have to wait for that."""
    deadline = time.monotonic() + SHOWS / 1000
    while redis.pubsub_numsub(channel)[0][1] < count:
        assert time.monotonic() < deadline, "the page opened no stream"
        time.sleep(0.1)


def open_ticket(page, live_server, redis, ticket, count=1):
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    page.evaluate("window.samePage = true")  # gone if the whole page loads again
    wait_for_stream(redis, live.ticket_channel(ticket.id), count)


def test_a_customer_reply_and_a_colleagues_change_show_without_reload(live_server, page, world, desk, redis):
    acme, ticket = desk
    sign_in(page, live_server, "tom@acme.example")
    open_ticket(page, live_server, redis, ticket)

    # Fetched while the page is open, through the real ingest path.
    world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                  in_reply_to="<p1@contoso.com>", body="Still jammed after the restart."))
    expect(page.locator("#ticket-conversation")).to_contain_text("Still jammed after the restart.", timeout=SHOWS)

    svc.update_fields(fresh(ticket.id), svc.FieldsInput(priority="high", assignee=str(acme.ana.id)), acme.ana)
    commit()
    expect(page.locator("#ticket-facts")).to_contain_text("high", timeout=SHOWS)
    expect(page.locator("#ticket-facts")).to_contain_text("Ana", timeout=SHOWS)
    expect(page.locator("#history")).to_contain_text("high", timeout=SHOWS)
    assert page.evaluate("window.samePage") is True


def test_a_reply_shows_queued_then_sent_or_failed(live_server, page, desk, redis):
    acme, ticket = desk
    sign_in(page, live_server, "tom@acme.example")
    open_ticket(page, live_server, redis, ticket)

    ticket_replies.reply(fresh(ticket.id), acme.tom, to="alice@contoso.com", cc="", text="On our way.")
    ticket_replies.reply(fresh(ticket.id), acme.tom, to="gone@contoso.com", cc="", text="And to you.")
    commit()
    outgoing = page.locator(".msg-out .delivery")
    expect(outgoing).to_have_count(2, timeout=SHOWS)
    expect(outgoing.nth(0)).to_have_text("queued")

    send_due()  # the sender job, as a worker runs it: two commits, one per message
    expect(page.locator(".msg-out .d-sent")).to_have_count(1, timeout=SHOWS)
    expect(page.locator(".msg-out .d-failed")).to_contain_text("550", timeout=SHOWS)
    assert page.evaluate("window.samePage") is True


def test_colleagues_see_ana_replying_and_the_list_shows_a_new_ticket(live_server, chromium, page, world, desk, redis):
    acme, ticket = desk
    sign_in(page, live_server, "tom@acme.example")
    open_ticket(page, live_server, redis, ticket)

    ana_context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        ana = ana_context.new_page()
        sign_in(ana, live_server, "ana@acme.example")
        open_ticket(ana, live_server, redis, ticket, count=2)
        ana.locator("#ticket-reply [contenteditable], #reply-text").first.click()
        ana.keyboard.type("Hello Alice")
        expect(page.locator("#ticket-presence")).to_have_text("Ana is replying", timeout=SHOWS)
        expect(ana.locator("#ticket-presence")).to_be_hidden()  # not to herself
    finally:
        ana_context.close()

    # The list, filtered and scrolled as it was, shows a ticket that arrives.
    page.goto(f"{live_server}/tickets?q=Scanner")
    wait_for_stream(redis, live.msp_channel(acme.msp.id))
    page.evaluate("window.samePage = true")
    world.deliver(acme.box, email(sender="bob@contoso.com", subject="Scanner offline"))
    world.deliver(acme.box, email(sender="bob@contoso.com", subject="Coffee machine"))
    expect(page.locator("#ticket-list")).to_contain_text("Scanner offline", timeout=SHOWS)
    expect(page.locator("#ticket-list")).not_to_contain_text("Coffee machine")  # the search still applies
    assert page.evaluate("window.samePage") is True


def test_assign_to_me_on_the_ticket_and_in_the_list(live_server, page, world, desk):
    acme, ticket = desk
    other = world.deliver(acme.box, email(sender="bob@contoso.com", subject="Scanner offline")).ticket
    sign_in(page, live_server, "tom@acme.example")
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    page.evaluate("window.samePage = true")
    page.locator("#ticket-fields").get_by_role("button", name="Assign to me").click()
    expect(page.locator("#ticket-facts")).to_contain_text("tom@acme.example")
    expect(page.get_by_text(f"{ticket.reference} is assigned to you.")).to_be_visible()
    expect(page.locator("#ticket-fields").get_by_role("button", name="Assign to me")).to_have_count(0)
    expect(page.locator("#history")).to_contain_text("tom@acme.example")
    assert page.evaluate("window.samePage") is True

    page.goto(f"{live_server}/tickets?q=Scanner")
    page.evaluate("window.samePage = true")
    row = page.locator("#ticket-list tr", has_text=other.reference)
    row.get_by_role("button", name=f"Assign {other.reference} to me").click()
    expect(row).to_contain_text("you", timeout=SHOWS)
    expect(page.locator("#ticket-list")).not_to_contain_text("Printer")  # the search still applies
    assert page.evaluate("window.samePage") is True
    assert fresh(other.id).assignee_id == acme.tom.id


def test_a_page_refused_a_stream_refreshes_itself_every_30_seconds(app, live_server, page, world, desk):
    """Too many streams open (portal.live.Stream.admit): the page is not left stale."""
    acme, ticket = desk
    app.config["TIDEMARK_LIVE_STREAMS_PER_USER"] = 0
    page.clock.install()
    sign_in(page, live_server, "tom@acme.example")
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    page.evaluate("window.samePage = true")
    expect(page.locator("html")).to_have_attribute("data-live-polling", "", timeout=SHOWS)
    world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                  in_reply_to="<p1@contoso.com>", body="Still jammed after the restart."))
    page.clock.run_for(30_000)
    expect(page.locator("#ticket-conversation")).to_contain_text("Still jammed after the restart.", timeout=SHOWS)
    assert page.evaluate("window.samePage") is True

""""Fetch now" in a real browser: the button in the mailbox list queues the fetch (inline here,
TIDEMARK_JOBS_SYNC), and the row asks again until it shows the outcome, against a real Dovecot."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_walk_pages import sign_in
from tests.mailfactory import email
from tests.portal.test_fetch_now import _box

pytestmark = pytest.mark.e2e


def test_fetch_now_in_the_list_shows_how_many_tickets_it_made(app, live_server, page, world, dovecot, mail_user,
                                                              smtp_gateway, redis):
    msp = world.msp("Acme MSP")
    box = _box(app, world, msp, dovecot, mail_user)
    world.user(msp, email="tom@acme.example", role="technician")
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    sign_in(page, live_server, "tom@acme.example")
    page.goto(live_server + "/mailboxes")
    row = page.locator(f"#fetch-{box.id}")
    row.get_by_role("button", name="Fetch now").click()
    expect(row.get_by_role("status")).to_have_text("Done: fetched 1, 1 new ticket")
    expect(row.get_by_role("button", name="Fetch now")).to_be_enabled()
    # Its page shows the same outcome, and the ticket is there.
    page.goto(live_server + f"/mailboxes/{box.id}")
    expect(page.locator(f"#fetch-{box.id}").get_by_role("status")).to_have_text("Done: fetched 1, 1 new ticket")
    page.goto(live_server + "/tickets")
    expect(page.locator("table.tickets tbody tr")).to_have_count(1)

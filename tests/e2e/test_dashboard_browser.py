import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def test_bulk_close_two_tickets_then_the_dashboard_counts_what_is_left(app, live_server, page, world, redis):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="tom@acme.example", role="technician")
    a = world.deliver(box, email(sender="alice@contoso.com", subject="Printer jam")).ticket
    b = world.deliver(box, email(sender="alice@contoso.com", subject="Mail bounced")).ticket
    world.deliver(box, email(sender="bob@fabrikam.com", subject="VPN down"))

    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("tom@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#tile-open strong")).to_have_text("3")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tickets").click()
    select_all = page.get_by_label("Select all tickets on this page")
    expect(select_all).to_be_visible()  # shown once the script runs
    select_all.check()
    expect(page.locator("[data-bulk-count]")).to_have_text("3 selected")
    select_all.uncheck()
    page.get_by_label(f"Select {a.reference}").check()
    page.get_by_label(f"Select {b.reference}").check()
    expect(page.locator("[data-bulk-count]")).to_have_text("2 selected")
    expect(select_all).to_have_js_property("indeterminate", True)
    # The list's own refresh waits while tickets are ticked: it would clear the selection.
    page.evaluate("htmx.ajax('GET', location.pathname, {source: '#ticket-list', target: '#ticket-list'})")
    page.wait_for_timeout(400)
    expect(page.get_by_label(f"Select {a.reference}")).to_be_checked()
    expect(page.locator("[data-bulk-count]")).to_have_text("2 selected")
    page.get_by_label("Set status").select_option("closed")
    page.get_by_role("button", name="Apply to selected").click()

    expect(page.get_by_text("2 tickets updated.")).to_be_visible()
    expect(page.locator("#ticket-list")).not_to_contain_text("Printer jam")
    expect(page.locator("#ticket-list")).to_contain_text("VPN down")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.locator("#tile-open strong")).to_have_text("1")
    expect(page.locator(".matrix")).to_contain_text("Fabrikam")
    expect(page.locator(".matrix")).not_to_contain_text("Contoso")
    page.get_by_label("1 new at Fabrikam").click()
    expect(page.locator("#ticket-list")).to_contain_text("VPN down")

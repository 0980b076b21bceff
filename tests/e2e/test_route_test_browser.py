"""A route put in test from its form: the mailbox page labels it, counts for it, and makes it live."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for_htmx
from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e


def test_admin_ticks_test_on_a_route_and_sees_the_label_then_makes_it_live(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    contoso = world.client(msp, "Contoso")
    box = world.mailbox(msp, address="support@demo.example", routes=[
        {"name": "Contoso", "client": contoso, "recipients": ["support@demo.example"], "senders": ["contoso.com"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    sign_in(page, live_server, "admin@demo.example")

    page.goto(f"{live_server}/mailboxes/{box.id}")
    contoso_route = page.locator("li.route", has_text="Contoso")
    expect(contoso_route.locator(".badge.test")).to_have_count(0)
    page.get_by_role("link", name="Edit Contoso").click()
    test_box = page.get_by_label("Test: only record what it would do")
    expect(test_box).not_to_be_checked()
    expect(page.get_by_text("nothing is filed by it: the next route decides")).to_be_visible()
    test_box.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Route Contoso saved.")).to_be_visible()

    contoso_route = page.locator("li.route", has_text="Contoso")
    expect(contoso_route.locator(".badge.test")).to_have_text("test")
    expect(contoso_route).to_contain_text("would have taken 0 emails")
    expect(page.locator("li.route", has_text="Everything else").locator(".badge.test")).to_have_count(0)

    page.wait_for_load_state()  # htmx asks; before it has loaded the server's page would
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Make Contoso live").click()
    expect(page.get_by_text("Contoso is live: from now on it files the mail it matches.")).to_be_visible()
    wait_for_htmx(page)
    expect(page.locator("li.route", has_text="Contoso").locator(".badge.test")).to_have_count(0)

"""At a phone's 390x844 the first ticket shows on the first screen: the menu and the list's
filters fold behind buttons (which work without script), list cards label their values, and the
ticket page keeps "Reply" in reach. Wider screens keep the open navigation and filters."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for_htmx
from tests.e2e.test_walk_pages import SIDEWAYS, TOO_WIDE, VIEWPORTS, sign_in
from tests.portal.test_ticket_list import add_tickets

pytestmark = pytest.mark.e2e


@pytest.fixture
def desk(world, redis):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso International Holdings")
    fabrikam = world.client(msp, "Fabrikam")
    world.user(msp, email="tom@acme.example", role="technician")
    add_tickets(msp, [contoso, fabrikam], 6, subject="The printer on the third floor prints only blank pages ({i})")
    return msp


def test_on_a_phone_the_first_ticket_is_on_the_first_screen(live_server, page, desk):
    page.set_viewport_size(VIEWPORTS["phone"])
    sign_in(page, live_server, "tom@acme.example")
    page.goto(live_server + "/tickets")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_be_hidden()
    expect(page.get_by_label("Status", exact=True)).to_be_hidden()
    expect(page.get_by_label("Search")).to_be_visible()
    first = page.locator("table.tickets tbody tr").first
    box = first.bounding_box()
    assert box["y"] + 40 < 844, f"the first ticket starts {box['y']} px down"
    assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)
    # The card says what each value is.
    expect(first.locator("td[data-label=Client]")).to_be_visible()
    assert first.locator("td[data-label=Client]").evaluate(
        "td => getComputedStyle(td, '::before').content") == '"Client: "'

    # Filters open and apply; the list follows.
    page.get_by_text("Filters", exact=True).click()
    expect(page.get_by_label("Status", exact=True)).to_be_visible()
    wait_for_htmx(page)
    page.get_by_label("Client", exact=True).select_option(label="Fabrikam")
    expect(page.locator("table.tickets tbody tr")).to_have_count(3)
    expect(page.locator("table.tickets td[data-label=Client]")).to_have_text(["Fabrikam"] * 3)
    expect(page).to_have_url(re.compile(r"client=\d+"))
    expect(page.locator("label.filters-button")).to_have_text("Filters (1)")  # the number follows
    assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)

    # The menu opens and navigates; the next page starts with it closed.
    page.locator("label.menu-button").click()
    expect(nav).to_be_visible()
    expect(page.get_by_role("link", name="My settings")).to_be_visible()
    assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)
    nav.get_by_role("link", name="Clients").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Clients")
    expect(nav).to_be_hidden()

    # The ticket page: "Reply" stays on screen and leads to the composer.
    page.goto(live_server + "/tickets/T-1")
    reply = page.get_by_role("link", name="Reply", exact=True)
    expect(reply).to_be_in_viewport()
    reply.click()
    expect(page.locator("#ticket-reply h2")).to_be_in_viewport()
    assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)


def test_without_script_the_menu_and_filters_still_open(chromium, live_server, desk):
    context = chromium.new_context(viewport=VIEWPORTS["phone"], java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server, "tom@acme.example")
        page.goto(live_server + "/tickets")
        page.locator("label.menu-button").click()
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Tickets")).to_be_visible()
        page.get_by_text("Filters", exact=True).click()
        page.get_by_label("Status", exact=True).select_option("waiting")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"status=waiting"))
        expect(page.locator("table.tickets .status")).to_have_text(["waiting"] * 2)
    finally:
        context.close()


def test_on_a_desktop_nothing_is_folded(live_server, page, desk):
    sign_in(page, live_server, "tom@acme.example")
    page.goto(live_server + "/tickets/T-1")
    expect(page.get_by_role("link", name="Reply", exact=True)).to_be_hidden()
    page.goto(live_server + "/tickets")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Mailboxes")).to_be_visible()
    expect(page.get_by_label("Status", exact=True)).to_be_visible()
    expect(page.locator("label.menu-button")).to_be_hidden()
    expect(page.locator("label.filters-button")).to_be_hidden()
    # No label before the values in the table's cells: the column headers say it.
    assert page.locator("table.tickets td[data-label=Client]").first.evaluate(
        "td => getComputedStyle(td, '::before').content") == "none"

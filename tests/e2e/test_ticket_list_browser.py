"""The ticket list in a real browser: search as one types, older/newer pages, sort headers."""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.conftest import wait_for_htmx
from tests.portal.test_ticket_list import add_tickets

pytestmark = pytest.mark.e2e


def test_search_pages_and_sorts_in_the_browser(app, live_server, page, world, redis):
    app.config["TIDEMARK_PAGE_SIZE"] = 3
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso")
    world.user(msp, email="tom@acme.example", role="technician")
    add_tickets(msp, [contoso], 7, subject="printer case {i}")
    add_tickets(msp, [contoso], 1, start=8, subject="Quokka in the server room")

    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("tom@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tickets").click()
    rows = page.locator("table.tickets tbody tr")
    expect(rows).to_have_count(3)
    expect(page.get_by_text("8 tickets, by last activity")).to_be_visible()

    # Older, then Newer again: other tickets, then the same first page.
    first = rows.locator("a[href^='/tickets/T-']").all_inner_texts()
    page.get_by_role("link", name="Older").click()
    expect(page.get_by_role("link", name="Newer")).to_be_visible()
    expect(rows).to_have_count(3)
    second = rows.locator("a[href^='/tickets/T-']").all_inner_texts()
    assert len(second) == 3 and not set(first) & set(second)
    page.get_by_role("link", name="Newer").click()
    expect(page.get_by_role("link", name="Newer")).to_have_count(0)
    expect(rows).to_have_count(3)
    assert rows.locator("a[href^='/tickets/T-']").all_inner_texts() == first

    # The Ticket header sorts by reference, newest first; chosen again, oldest first.
    page.get_by_role("link", name="Ticket", exact=True).click()
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Ticket")
    expect(rows.locator("a[href^='/tickets/T-']")).to_have_text(["T-8", "T-7", "T-6"])
    page.get_by_role("link", name="Ticket ↓").click()
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Ticket")
    expect(rows.locator("a[href^='/tickets/T-']")).to_have_text(["T-1", "T-2", "T-3"])

    # Typing searches subject words; the order chosen stays.
    wait_for_htmx(page)
    page.get_by_label("Search").fill("quok")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Quokka in the server room")
    expect(page).to_have_url(re.compile(r"q=quok.*sort=reference&order=asc"))

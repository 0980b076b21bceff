"""The mailbox form in sections at 1280 px: short with the sections closed, a section opens with a
click or the keyboard and shows its fields, and a refused save opens the section of the error."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e

SECTIONS = ("addresses", "server", "fetching", "tickets", "replies", "status")


def form_height(page) -> float:
    return page.locator("#mailbox-form").evaluate("form => form.getBoundingClientRect().height")


def test_the_mailbox_form_is_short_in_sections_and_a_section_opens_to_its_fields(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    sign_in(page, live_server, "admin@demo.example")
    page.goto(live_server + "/mailboxes/new")
    assert page.viewport_size["width"] == 1280

    # The essentials are open: address and server fields are there to type in.
    expect(page.get_by_label("Primary address")).to_be_visible()
    expect(page.get_by_label("Server", exact=True)).to_be_visible()
    expect(page.get_by_label("Fetch every (seconds)")).to_be_hidden()
    with_essentials = form_height(page)
    for key in ("addresses", "server"):
        page.locator(f"#section-{key} > summary").click()
    expect(page.get_by_label("Primary address")).to_be_hidden()
    closed = form_height(page)
    # It was 3,150 px in one piece; now 1,300 with the essentials open, 400 all closed.
    assert closed < 600 and with_essentials < 1500, (closed, with_essentials)

    # A closed section shows its values in one line, and opens from the keyboard.
    fetching = page.locator("#section-fetching > summary")
    expect(fetching).to_contain_text("INBOX · every 60 s · mark as read")
    fetching.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Fetch every (seconds)")).to_be_visible()
    expect(page.get_by_label("Folders to read")).to_be_visible()
    assert form_height(page) > closed + 200
    page.locator("#section-tickets > summary").click()
    expect(page.get_by_label("Client", exact=True)).to_be_visible()
    expect(page.get_by_label("Status of new tickets")).to_be_visible()


def test_a_refused_save_comes_back_with_the_section_of_the_error_open(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    sign_in(page, live_server, "admin@demo.example")
    page.goto(live_server + "/mailboxes/new")
    page.get_by_label("Primary address").fill("support@demo.example")
    page.get_by_label("Server", exact=True).fill("imap.demo.example")
    page.locator("#section-fetching > summary").click()
    page.get_by_label("Fetch every (seconds)").fill("often")
    page.locator("#section-fetching > summary").click()  # closed again before saving
    expect(page.get_by_label("Fetch every (seconds)")).to_be_hidden()
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.locator("#poll_interval-error")).to_contain_text("whole number from 10 to 86400")
    expect(page.get_by_label("Fetch every (seconds)")).to_be_visible()
    expect(page.get_by_label("Fetch every (seconds)")).to_be_focused()
    expect(page.locator("#section-status")).not_to_have_attribute("open", "")

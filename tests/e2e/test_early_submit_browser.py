"""A form that htmx sends, submitted before htmx has taken the page (a quick click while the page
still loads): static/early.js holds the submit and presses the button again once htmx is ready,
so the answer lands in its place instead of the browser showing a bare fragment as a page."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e


def test_a_test_connection_clicked_before_htmx_has_started_answers_in_place(live_server, page, world, dovecot,
                                                                             mail_user):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    client = world.client(msp, "Contoso")
    box = world.mailbox(client, address="support@demo.example", protocol="imap", security="none",
                        port=dovecot.imap_port, username=mail_user.name, password=mail_user.password)
    sign_in(page, live_server, "admin@demo.example")

    # htmx's file is held back until the click has been made.
    held = []
    page.route(re.compile(r".*/vendor/htmx/htmx-[0-9.]+\.min\.js$"), lambda route: held.append(route))
    page.goto(f"{live_server}/mailboxes/{box.id}", wait_until="commit")
    button = page.get_by_role("button", name="Test connection")
    expect(button).to_be_visible()
    button.click()
    page.wait_for_timeout(300)  # a plain POST would have left the page by now
    assert page.url == f"{live_server}/mailboxes/{box.id}"
    assert len(held) == 1
    held[0].continue_()
    expect(page.locator(f"#test-{box.id}")).to_contain_text("Connected to 127.0.0.1")
    assert page.url == f"{live_server}/mailboxes/{box.id}"
    expect(page.get_by_role("heading", level=1)).to_contain_text("support@demo.example")

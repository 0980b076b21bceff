"""Merge into… and Split… on a ticket's page, and merging tickets selected in the list, in a browser."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mailboxes_browser import sign_in as sign_in_as
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def sign_in(page, live_server):
    sign_in_as(page, live_server, "tom@acme.example")


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="tom@acme.example", role="technician")
    return box


def test_merge_into_then_unmerge(live_server, page, world, desk):
    a = world.deliver(desk, email(sender="alice@contoso.com", subject="Printer jams", body="Paper stuck.")).ticket
    b = world.deliver(desk, email(sender="bob@contoso.com", subject="Printer broken", body="No power.")).ticket
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets/{a.reference}")
    page.get_by_role("link", name="Merge into…").click()
    page.get_by_label("Reference or subject").fill("broken")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=f"Choose {b.reference}").click()
    expect(page.locator("#merge-summary")).to_contain_text("1 message of")
    expect(page.locator("#merge-summary")).to_contain_text("alice@contoso.com joins the CCs")
    page.get_by_role("button", name=f"Merge into {b.reference}").click()
    expect(page.get_by_text(f"{a.reference} is merged into {b.reference}")).to_be_visible()
    expect(page.locator(".conversation")).to_contain_text("Paper stuck.")
    expect(page.locator(".conversation")).to_contain_text("No power.")

    page.goto(f"{live_server}/tickets/{a.reference}")
    expect(page.locator("#merged-banner")).to_contain_text(b.reference)
    page.locator("#merged-banner").get_by_role("button", name="Unmerge").click()
    expect(page.get_by_text("is no longer merged")).to_be_visible()
    expect(page.locator(".conversation")).to_contain_text("Paper stuck.")
    expect(page.locator("#merged-banner")).to_have_count(0)


def test_split_then_merge_back(live_server, page, world, desk):
    first = world.deliver(desk, email(sender="alice@contoso.com", subject="Printer", body="Printer jams."))
    world.deliver(desk, email(sender="alice@contoso.com", subject="Re: Printer", body="Also the scanner.",
                              in_reply_to=first.message.message_id))
    a = first.ticket
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets/{a.reference}")
    page.get_by_role("link", name="Split…").click()
    page.get_by_label("From alice@contoso.com: Re: Printer").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#split-summary")).to_contain_text("Re: Printer")
    page.get_by_role("button", name="Split into a new ticket").click()
    expect(page.get_by_text(f"is split off {a.reference}")).to_be_visible()
    expect(page.locator(".conversation")).to_contain_text("Also the scanner.")
    expect(page.locator(".conversation")).not_to_contain_text("Printer jams.")
    expect(page.locator("#ticket-facts")).to_contain_text(f"{a.reference} (split)")

    page.get_by_role("link", name=f"Merge back into {a.reference}").click()
    page.get_by_role("button", name=f"Merge into {a.reference}").click()
    expect(page.locator(".conversation")).to_contain_text("Also the scanner.")
    expect(page.locator(".conversation")).to_contain_text("Printer jams.")


def test_merge_selected_tickets_from_the_list(live_server, page, world, desk):
    tickets = [world.deliver(desk, email(sender="alice@contoso.com", subject=f"Case {i}", body=f"Body {i}.")).ticket
               for i in range(3)]
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets")
    for t in tickets[:2]:
        page.get_by_label(f"Select {t.reference}").check()
    page.get_by_label("Merge into (reference)").fill("T-999")
    page.get_by_role("button", name="Merge selected…").click()
    expect(page.locator("#bulk-into-error")).to_contain_text("There is no ticket T-999 in your MSP.")
    page.get_by_label("Merge into (reference)").fill(tickets[2].reference)
    page.get_by_role("button", name="Merge selected…").click()
    expect(page.locator("#merge-summary")).to_contain_text(tickets[0].reference)
    page.get_by_role("button", name=f"Merge into {tickets[2].reference}").click()
    expect(page.get_by_text(f"2 tickets merged into {tickets[2].reference}")).to_be_visible()
    for i in range(3):
        expect(page.locator(".conversation")).to_contain_text(f"Body {i}.")

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def test_a_new_msp_sees_the_checklist_then_its_tickets_charted(app, live_server, page, world, redis):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    checklist = page.get_by_role("region", name="Getting started")
    expect(checklist).to_be_visible()
    expect(checklist.locator("li.to-do")).to_have_count(4)
    checklist.get_by_role("link", name="Add your first mailbox").click()
    expect(page).to_have_url(live_server + "/mailboxes/new")
    page.go_back()
    expect(page.get_by_text("No ticket opened or closed in the last 30 days.")).to_be_visible()

    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    for i in range(3):
        world.deliver(box, email(sender="alice@contoso.com", subject=f"contoso {i}"))
    page.reload()
    expect(checklist.locator("li.done")).to_have_count(2)  # the mailbox, and Contoso's domain
    expect(checklist.locator('li[data-step="test mail"] a')).to_have_attribute("href", f"/mailboxes/{box.id}")
    chart = page.get_by_role("img", name="Tickets opened and closed at Contoso")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(1)  # three opened today: one bar
    expect(chart.locator("rect.bar.opened")).to_have_attribute("data-value", "3")
    box_width = chart.bounding_box()["width"]
    assert box_width > 200  # drawn at a readable size, not collapsed
    page.get_by_text("Tickets opened and closed at Contoso as a table").click()
    expect(page.locator(".chart-table table").first).to_contain_text("3")

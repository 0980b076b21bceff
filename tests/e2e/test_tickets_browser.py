import re

import pytest
from playwright.sync_api import expect

from portal.services import commit
from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e

HOSTILE = ('<p id="greeting">Hello from <b>Contoso</b></p>'
           '<script>document.title = "pwned-script"</script>'
           '<img src="x" onerror="document.title = \'pwned-onerror\'">'
           '<a id="bad-link" href="javascript:document.title=\'pwned-link\'">click me</a>'
           '<svg onload="document.title=\'pwned-svg\'"></svg>'
           '<iframe src="javascript:parent.document.title=\'pwned-frame\'"></iframe>')


def test_hostile_inbound_html_runs_nothing_and_a_reply_goes_out(live_server, page, world, smtp_server, smtp_gateway):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="tom@acme.example", role="technician")
    commit()
    result = world.deliver(box, email(sender="alice@contoso.com", subject="Strange mail", html=HOSTILE))
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("tom@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tickets").click()
    page.get_by_role("link", name=result.ticket.reference).click()
    expect(page.locator(".mail-html b")).to_have_text("Contoso")  # the harmless HTML shows
    if page.locator("#bad-link").count():
        page.locator("#bad-link").click()
    page.wait_for_timeout(300)
    assert "pwned" not in page.title() and dialogs == []
    assert page.locator(".mail-html script, .mail-html iframe, .mail-html [onerror], .mail-html svg").count() == 0

    # A technician cannot reach admin pages.
    response = page.goto(live_server + "/settings/mail")
    assert response.status == 403
    page.go_back()

    page.get_by_label("Message").fill("We are looking into it.")
    page.get_by_label("and set status").select_option("waiting")
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_text("Reply queued")).to_be_visible()
    expect(page.locator(".msg-out .delivery")).to_contain_text(re.compile("sent"))
    assert smtp_server.last().rcpt_tos == ["alice@contoso.com"]


def test_a_note_and_the_fields_change_their_part_of_the_page_in_place(live_server, page, world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="tom@acme.example", role="technician")
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("tom@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    page.evaluate("window.samePage = true")  # gone if the whole page loads again

    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#note-text-error")).to_contain_text("Write")  # the error beside the field
    page.get_by_label("Note (never emailed)").fill("Customer called.")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_text("Internal note added.")).to_be_visible()
    expect(page.locator("#ticket-conversation")).to_contain_text("Customer called.")
    expect(page.get_by_label("Note (never emailed)")).to_have_value("")

    page.get_by_label("Priority", exact=True).select_option("high")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(f"{ticket.reference}: priority changed.")).to_be_visible()
    expect(page.locator("#ticket-facts")).to_contain_text("high")
    expect(page.locator("#history td.new")).to_have_text("high")  # refreshed on the HX-Trigger
    assert page.evaluate("window.samePage") is True

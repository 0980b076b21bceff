"""The composer's From choice in a real browser (issue #17, item 4): a technician replies from an
alias of the ticket's mailbox, and the mail reaches the SMTP server (aiosmtpd) from that address
with the mailbox's Reply-To; an address the page never offered is refused by the server."""

import pytest
from playwright.sync_api import expect

from portal.extensions import db
from portal.models import Mailbox
from portal.services import commit
from tests.e2e.test_composer_browser import sign_in
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


@pytest.fixture
def ticket(world, acme, smtp_gateway):
    box = db.session.get(Mailbox, acme.box.id)
    box.aliases, box.reply_to = ["desk@acme.example"], "answers@acme.example"
    commit()
    return world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer")).ticket


def test_a_reply_goes_out_from_the_chosen_alias_with_the_reply_to(live_server, page, ticket, smtp_server):
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    chooser = page.get_by_label("From", exact=True)
    expect(chooser).to_have_value("support@acme.example")  # the mailbox's default
    expect(chooser.locator("option")).to_have_text(["support@acme.example", "desk@acme.example"])
    chooser.select_option("desk@acme.example")
    page.locator(".composer-editor").click()
    page.keyboard.type("Sent from the desk.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_text("Reply queued")).to_be_visible()
    expect(page.locator(".msg-out .delivery")).to_contain_text("sent")

    mail = smtp_server.last().message
    assert mail["From"].addresses[0].addr_spec == "desk@acme.example"
    assert [a.addr_spec for a in mail["Reply-To"].addresses] == ["answers@acme.example"]
    assert "Sent from the desk." in mail.get_body(("plain",)).get_content()


def test_a_from_address_the_page_never_offered_is_refused(live_server, page, ticket, smtp_server):
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    before = len(smtp_server.messages)
    # What a hand-edited form would post: the option's value changed under the page.
    page.locator("#reply-from option").first.evaluate("o => { o.value = 'ceo@elsewhere.example'; }")
    page.locator(".composer-editor").click()
    page.keyboard.type("Forged.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#reply-from-error")).to_contain_text(
        "ceo@elsewhere.example is not an address of this ticket's mailbox")
    expect(page.locator(".composer-editor")).to_contain_text("Forged.")
    assert len(smtp_server.messages) == before

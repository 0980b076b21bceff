import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def sign_in(page, live_server):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ann@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_an_unprocessed_email_is_taught_to_a_client_and_becomes_a_ticket(live_server, page, world, bcc_desk):
    _msp, contoso, box = bcc_desk
    world.deliver(box, email(sender="it@newcustomer.example", to=["someone@elsewhere.example"],
                             subject="New office printer", html="<p>Our <b>printer</b> is new</p>"))
    world.deliver(box, email(sender="boss@newcustomer.example", to=["someone@elsewhere.example"],
                             subject="Second question"))
    confirmations = []
    page.on("dialog", lambda d: (confirmations.append(d.message), d.accept()))

    sign_in(page, live_server)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator("#unprocessed-badge")).to_have_text("2")
    nav.get_by_role("link", name=re.compile("Unprocessed")).click()
    expect(page.get_by_role("cell", name="only BCC'd to this mailbox", exact=False).first).to_be_visible()
    page.get_by_role("link", name="New office printer").click()
    expect(page.locator(".mail-html b")).to_have_text("printer")

    page.get_by_label("everyone at newcustomer.example").check()
    page.get_by_label("Client", exact=True).last.select_option(label="Contoso")
    page.wait_for_load_state()  # htmx asks first; a click before it loaded gets the server's page
    page.get_by_role("button", name="Teach and place").click()
    expect(page.get_by_text("Placed 2 of 2 waiting emails from this sender")).to_be_visible()
    assert confirmations and "allow-list" in confirmations[0]
    expect(page.get_by_text("All clear")).to_be_visible()
    expect(nav.locator("#unprocessed-badge")).to_have_text("")

    nav.get_by_role("link", name="Tickets").click()
    page.get_by_role("link", name="T-1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("New office printer")
    expect(page.locator(".facts")).to_contain_text(contoso.name)


def test_discard_and_undo_in_place(live_server, page, world, bcc_desk):
    box = bcc_desk[2]
    world.deliver(box, email(sender="x@spam.example", to=["someone@elsewhere.example"], subject="Cheap pills"))
    world.deliver(box, email(sender="it@newcustomer.example", to=["someone@elsewhere.example"], subject="Real work"))

    sign_in(page, live_server)
    page.goto(live_server + "/unprocessed")
    badge = page.locator("#unprocessed-badge")
    expect(badge).to_have_text("2")
    page.get_by_role("button", name="Discard “Cheap pills”").click()
    toast = page.locator(".toast")
    expect(toast).to_contain_text("Discarded “Cheap pills”")
    expect(page.get_by_role("link", name="Cheap pills")).to_have_count(0)
    expect(badge).to_have_text("1")

    page.get_by_role("link", name=re.compile("Discarded, last 30 days")).click()
    expect(page.get_by_role("link", name="Cheap pills")).to_be_visible()
    page.get_by_role("link", name=re.compile("Waiting")).click()

    page.get_by_role("button", name="Discard “Real work”").click()
    page.locator(".toast").get_by_role("button", name="Undo").click()
    expect(page.get_by_role("link", name="Real work")).to_be_visible()
    expect(page.locator(".toast")).to_have_count(0)
    expect(badge).to_have_text("1")


def test_the_bcc_trap_is_named_and_the_wildcard_route_fixes_it(live_server, page, world, bcc_desk):
    msp, _contoso, box = bcc_desk
    newco = world.client(msp, "Newco", allow=["newcustomer.example"])  # the allow-list was taught already
    world.deliver(box, email(sender="it@newcustomer.example", to=["someone@elsewhere.example"],
                             subject="Still waiting after teaching"))
    confirmations = []
    page.on("dialog", lambda d: (confirmations.append(d.message), d.accept()))

    sign_in(page, live_server)
    page.goto(live_server + "/unprocessed")
    page.get_by_role("link", name="Still waiting after teaching").click()
    cause = page.locator(".bcc-cause")
    expect(cause).to_contain_text("sent to desk@acme.example by BCC")
    expect(cause).to_contain_text("no wildcard route for this sender")
    expect(cause.get_by_label("Client the sender's mail goes to")).to_have_value(str(newco.id))
    cause.get_by_label("anyone at newcustomer.example").check()
    page.wait_for_load_state()  # htmx asks first; a click before it loaded gets the server's page
    cause.get_by_role("button", name="Add the wildcard route and decide again").click()

    expect(page.get_by_text("Added the wildcard route 'BCC from newcustomer.example'")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Still waiting after teaching")
    expect(page.locator(".facts")).to_contain_text("Newco")
    assert confirmations and "wildcard route" in confirmations[0]
    expect(page.get_by_role("navigation", name="Main").locator("#unprocessed-badge")).to_have_text("")

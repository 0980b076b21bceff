import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e


def sign_in(page, live_server, email):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def route_names(page):
    return page.locator("#routes .route-name")


def add_route(page, name, recipients=None, fallback=False):
    page.get_by_role("link", name="Add a route").click()
    page.get_by_label("Name").fill(name)
    if recipients:
        page.get_by_label("Recipients").fill(recipients)
    if fallback:
        expect(page.get_by_label(re.compile("^Fallback route"))).to_be_checked()
        expect(page.get_by_label("Recipients")).to_be_hidden()  # a fallback has no conditions
    page.get_by_role("button", name="Add route").click()
    expect(page.get_by_text(f"Route {name} saved.")).to_be_visible()


def test_admin_creates_a_mailbox_adds_routes_reorders_them_by_keyboard_and_activates_it(
        live_server, page, world, dovecot, mail_user):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    world.client(msp, "Contoso")
    sign_in(page, live_server, "admin@demo.example")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Mailboxes").click()
    expect(page.get_by_text("No mailboxes yet.")).to_be_visible()
    page.get_by_role("link", name="Add a mailbox").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New mailbox")

    # Protocol-dependent fields switch in place and keep what was typed; the port follows.
    port = page.get_by_label("Port", exact=True)
    expect(port).to_have_value("993")
    page.locator("#section-fetching > summary").click()  # closed until opened
    page.get_by_label("Folders to read").fill("INBOX\nPartners")
    page.get_by_label("Protocol").select_option("pop3")
    expect(page.get_by_label("Folders to read")).to_be_hidden()
    expect(page.locator("#after_action_pop3")).to_be_visible()
    expect(port).to_have_value("995")
    page.get_by_label("Security").select_option("none")
    expect(port).to_have_value("110")
    page.get_by_label("Protocol").select_option("imap")
    expect(page.get_by_label("Folders to read")).to_have_value("INBOX\nPartners")
    expect(port).to_have_value("143")
    page.locator("#after_action_imap").select_option("move")
    expect(page.get_by_label("Move processed mail to")).to_be_visible()
    page.locator("#after_action_imap").select_option("seen")
    expect(page.get_by_label("Move processed mail to")).to_be_hidden()
    port.fill(str(dovecot.imap_port))  # typed: no longer follows
    page.get_by_label("Security").select_option("starttls")
    page.get_by_label("Security").select_option("none")
    expect(port).to_have_value(str(dovecot.imap_port))

    page.get_by_label("Primary address").fill("support@demo.example")
    page.get_by_label("Server", exact=True).fill("127.0.0.1")
    page.get_by_label("User name").fill(mail_user.name)
    page.get_by_label("Password", exact=True).fill(mail_user.password)
    page.get_by_label("Folders to read").fill("INBOX")

    # "Test connection" tries the values as typed, before anything is saved.
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_contain_text("Connected to 127.0.0.1")

    page.get_by_label("Fetch every (seconds)").fill("often")
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.locator("#poll_interval-error")).to_contain_text("whole number from 10 to 86400")
    expect(page.get_by_label("Fetch every (seconds)")).to_be_focused()
    # The password was not sent back: type it again.
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    page.get_by_label("Password", exact=True).fill(mail_user.password)
    page.get_by_label("Fetch every (seconds)").fill("60")
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.get_by_text("Mailbox support@demo.example created.")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_contain_text("support@demo.example")

    add_route(page, "Everything else", fallback=True)
    add_route(page, "Contoso", recipients="contoso@demo.example")
    add_route(page, "Fabrikam", recipients="fabrikam@demo.example")
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])

    # Reorder with the keyboard only: focus stays on the moved route's buttons.
    page.get_by_role("button", name="Move Fabrikam up").focus()
    page.keyboard.press("Enter")
    expect(route_names(page)).to_have_text(["Fabrikam", "Contoso", "Everything else"])
    expect(page.get_by_role("status").filter(has_text="Moved Fabrikam up to place 1.")).to_be_visible()
    expect(page.get_by_role("button", name="Move Fabrikam down")).to_be_focused()
    page.keyboard.press("Space")
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])
    expect(page.get_by_role("button", name="Move Fabrikam up")).to_be_focused()
    page.keyboard.press("Enter")
    expect(route_names(page)).to_have_text(["Fabrikam", "Contoso", "Everything else"])

    # And by dragging: Contoso back above Fabrikam.
    page.locator("li.route", has_text="Contoso").drag_to(page.locator("li.route", has_text="Fabrikam"),
                                                         target_position={"x": 40, "y": 5})
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])
    expect(page.get_by_text("New order saved.")).to_be_visible()
    page.reload()
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])

    # Not active before a test of the saved values has succeeded (the form's test was of typed ones).
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_text("Not activated: Test the connection first").first).to_be_visible()
    page.locator("#server-title").locator("..").get_by_role("button", name="Test connection").click()
    expect(page.locator(f"#test-{page.url.rsplit('/', 1)[1]}")).to_contain_text("Connected to 127.0.0.1")
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_text("support@demo.example is active")).to_be_visible()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()
    history = page.locator("#history")
    expect(history).to_contain_text("routes reordered")
    expect(history).to_contain_text("route Contoso added")

    # Delete asks first; dismissed, nothing happens. (Once the page has loaded: a click before its
    # script ran is a plain submit, which gets a page that asks; tests/portal/test_asks_first.py.)
    page.wait_for_load_state()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("button", name="Delete")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Mailbox support@demo.example deleted.")).to_be_visible()
    expect(page.get_by_text("No mailboxes yet.")).to_be_visible()


def test_a_keyboard_move_made_before_htmx_took_the_list_keeps_the_focus_on_the_moved_route(live_server, page, world):
    """The plain form (htmx had not yet taken it): the page the move comes back to focuses the
    moved route's button, and nothing after the load (a fragment, htmx) takes that focus away."""
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    client = world.client(msp, "Contoso")
    box = world.mailbox(client, address="support@demo.example", routes=[
        {"name": "Everything else", "client": msp, "fallback": True},
        {"name": "Contoso", "client": client, "recipients": ["contoso@demo.example"]},
        {"name": "Fabrikam", "client": client, "recipients": ["fabrikam@demo.example"]},
    ])
    sign_in(page, live_server, "admin@demo.example")
    page.goto(f"{live_server}/mailboxes/{box.id}")
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])
    # A copy of the form carries none of htmx's listeners: its submit is a plain POST.
    page.evaluate("() => { const f = document.getElementById('route-order'); f.replaceWith(f.cloneNode(true)); }")
    page.get_by_role("button", name="Move Fabrikam up").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state("load")
    expect(route_names(page)).to_have_text(["Fabrikam", "Contoso", "Everything else"])
    expect(page.get_by_role("button", name="Move Fabrikam down")).to_be_focused()
    page.wait_for_timeout(300)  # past the fragment scroll and htmx's start, which ran after the load
    expect(page.get_by_role("button", name="Move Fabrikam down")).to_be_focused()
    page.keyboard.press("Space")  # now htmx: the same focus after the swap
    expect(route_names(page)).to_have_text(["Contoso", "Fabrikam", "Everything else"])
    expect(page.get_by_role("button", name="Move Fabrikam up")).to_be_focused()

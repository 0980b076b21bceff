"""Connect in a browser: the admin fills the mailbox form with a preset, leaves for the provider's consent page (the local authorisation
server), accepts, comes back connected, then disconnects after confirming."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e

ACCOUNT = "helpdesk@contoso.example"


def fill_the_form_with_presets(page, live_server, oauth_server):
    """The presets fill server, port, security, sign-in and the user name; the provider's own fields
    follow the provider. Then the generic provider is pointed at the local server."""
    page.goto(live_server + "/mailboxes/new")
    page.get_by_label("Primary address").fill(ACCOUNT)
    presets = page.locator("[data-presets]")
    presets.get_by_role("button", name="Microsoft 365", exact=True).click()
    expect(page.get_by_label("Server", exact=True)).to_have_value("outlook.office365.com")
    expect(page.get_by_label("Port", exact=True)).to_have_value("993")
    expect(page.get_by_label("Security")).to_have_value("ssl")
    expect(page.get_by_label("Sign in with")).to_have_value("oauth2")
    expect(page.get_by_label("User name")).to_have_value(ACCOUNT)
    expect(page.get_by_label("Tenant")).to_have_value("organizations")
    expect(page.get_by_label("Password", exact=True)).to_be_hidden()
    presets.get_by_role("button", name="Google Workspace").click()
    expect(page.get_by_label("Server", exact=True)).to_have_value("imap.gmail.com")
    expect(page.get_by_label("Tenant")).to_be_hidden()
    presets.get_by_role("button", name="Microsoft 365 (Graph)").click()
    expect(page.get_by_label("Server", exact=True)).to_be_hidden()
    expect(page.get_by_label("Graph API URL")).to_be_visible()
    presets.get_by_role("button", name="Microsoft 365", exact=True).click()
    expect(page.get_by_label("Protocol")).to_have_value("imap")

    page.get_by_label("Provider").select_option("generic")
    page.get_by_label("Authorisation URL").fill(oauth_server.url + "/authorize")
    page.get_by_label("Token URL").fill(oauth_server.url + "/token")
    page.get_by_label("Client id").fill("tidemark")
    page.get_by_label("Client secret", exact=True).fill("s3cret-client")
    page.get_by_label("Scopes").fill("openid\nmail")
    page.get_by_role("button", name="Create mailbox").click()
    expect(page.get_by_text(f"Mailbox {ACCOUNT} created.")).to_be_visible()


def test_admin_sets_up_a_mailbox_with_a_preset_connects_it_at_the_provider_and_disconnects_it(
        app, live_server, page, world, redis, oauth_server):
    app.config["TIDEMARK_PORTAL_URL"] = live_server  # where the provider sends the browser back
    oauth_server.register_client(redirect_uris=[live_server + "/oauth/callback"])
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    sign_in(page, live_server, "admin@demo.example")
    # The local provider has no icon; the browser's ask for one is not what this test is about.
    page.route(oauth_server.url + "/favicon.ico", lambda route: route.fulfill(status=204))
    fill_the_form_with_presets(page, live_server, oauth_server)

    sign_in_card = page.locator("#sign-in")
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text("not connected")
    expect(sign_in_card).to_contain_text(live_server + "/oauth/callback")
    sign_in_card.get_by_role("button", name="Connect").click()

    # The provider's page, with the mailbox's user name filled in from login_hint.
    expect(page.get_by_role("heading", name="tidemark asks for access")).to_be_visible()
    expect(page.get_by_label("Account")).to_have_value(ACCOUNT)
    page.get_by_role("button", name="Accept").click()

    expect(page).to_have_url(re.compile(r"/mailboxes/\d+#sign-in$"))
    expect(page.get_by_text(f"Connected to {ACCOUNT}.")).to_be_visible()
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text(f"connected as {ACCOUNT}")

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    sign_in_card.get_by_role("button", name="Disconnect").click()
    expect(page.get_by_text(f"Disconnected {ACCOUNT}.")).to_be_visible()
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text("not connected")
    assert asked and asked[0].startswith(f"Disconnect {ACCOUNT} from {ACCOUNT}?")
    expect(sign_in_card.get_by_role("button", name="Disconnect")).to_have_count(0)

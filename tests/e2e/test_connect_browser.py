"""Connect in a browser: the admin leaves for the provider's consent page (the local authorisation
server), accepts, comes back connected, then disconnects after confirming."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e

ACCOUNT = "helpdesk@contoso.example"


def test_admin_connects_a_mailbox_at_the_provider_and_disconnects_it(app, live_server, page, world, redis,
                                                                      oauth_server):
    app.config["TIDEMARK_PORTAL_URL"] = live_server  # where the provider sends the browser back
    oauth_server.register_client(redirect_uris=[live_server + "/oauth/callback"])
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    box = world.mailbox(msp, address=ACCOUNT, username=ACCOUNT, password=None, auth="oauth2", oauth={
        "provider": "generic", "flow": "delegated", "client_id": "tidemark", "client_secret": "s3cret-client",
        "authorize_url": oauth_server.url + "/authorize", "token_url": oauth_server.url + "/token",
        "scopes": ["openid", "mail"]})
    sign_in(page, live_server, "admin@demo.example")
    # The local provider has no icon; the browser's ask for one is not what this test is about.
    page.route(oauth_server.url + "/favicon.ico", lambda route: route.fulfill(status=204))

    page.goto(f"{live_server}/mailboxes/{box.id}")
    sign_in_card = page.locator("#sign-in")
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text("not connected")
    expect(sign_in_card).to_contain_text(live_server + "/oauth/callback")
    sign_in_card.get_by_role("button", name="Connect").click()

    # The provider's page, with the mailbox's user name filled in from login_hint.
    expect(page.get_by_role("heading", name="tidemark asks for access")).to_be_visible()
    expect(page.get_by_label("Account")).to_have_value(ACCOUNT)
    page.get_by_role("button", name="Accept").click()

    expect(page).to_have_url(re.compile(rf"/mailboxes/{box.id}#sign-in$"))
    expect(page.get_by_text(f"Connected to {ACCOUNT}.")).to_be_visible()
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text(f"connected as {ACCOUNT}")

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    sign_in_card.get_by_role("button", name="Disconnect").click()
    expect(page.get_by_text(f"Disconnected {ACCOUNT}.")).to_be_visible()
    expect(sign_in_card.locator("[data-grant-state]")).to_have_text("not connected")
    assert asked and asked[0].startswith(f"Disconnect {ACCOUNT} from {ACCOUNT}?")
    expect(sign_in_card.get_by_role("button", name="Disconnect")).to_have_count(0)

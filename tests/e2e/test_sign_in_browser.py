"""The sign-in of OAuth2 mailboxes in a real browser: the dashboard's "Sign-in grants" leads to
the mailbox's sign-in section, and both fit a phone screen with long reasons in them."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_walk_pages import SIDEWAYS, TOO_WIDE, sign_in
from tests.portal.test_sign_in_pages import oauth_mailbox

pytestmark = pytest.mark.e2e

REASON = ("the sign-in service refused the OAuth2 grant (AADSTS7000222): the provided client secret keys for app "
          "'00000000-0000-0000-0000-000000000000' are expired. Create a new secret and reconnect the mailbox.")


def test_sign_in_grants_on_the_dashboard_lead_to_the_mailbox(app, live_server, page, world, redis):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    oauth_mailbox(app, world, msp, "helpdesk-with-a-long-name@contoso-international.example", grant_days=5,
                  secret_days=2)
    broken = oauth_mailbox(app, world, msp, "broken@acme.example", reconnect=REASON)
    sign_in(page, live_server, "ana@acme.example")
    page.goto(live_server + "/")
    grants = page.locator("section", has=page.get_by_role("heading", name="Sign-in grants"))
    expect(grants.get_by_role("row")).to_have_count(3)  # the header and the two that need a person
    expect(grants.get_by_role("row").nth(1)).to_contain_text("reconnect needed: the sign-in service refused")
    expect(grants.locator(".badge.late")).to_have_text(["in 5 days", "in 2 days"])
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)
    grants.get_by_role("link", name="broken@acme.example").click()
    section = page.locator("#sign-in")
    expect(section).to_be_visible()
    expect(section.locator("#grant-state")).to_contain_text("AADSTS7000222")
    assert page.url.endswith(f"/mailboxes/{broken.id}#sign-in")
    assert page.evaluate(SIDEWAYS) <= 0, page.evaluate(TOO_WIDE)

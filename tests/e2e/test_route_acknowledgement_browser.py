"""An admin chooses the acknowledgement a route's new tickets get, in the route's form."""

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import Route
from tests.e2e.test_mailboxes_browser import sign_in

pytestmark = pytest.mark.e2e


def test_admin_chooses_the_short_acknowledgement_for_a_route(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    contoso = world.client(msp, "Contoso")
    box = world.mailbox(msp, address="support@demo.example", routes=[
        {"name": "Contoso", "client": contoso, "recipients": ["support@demo.example"], "senders": ["contoso.com"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    sign_in(page, live_server, "admin@demo.example")

    page.goto(f"{live_server}/mailboxes/{box.id}")
    page.get_by_role("link", name="Edit Contoso").click()
    choice = page.get_by_label("Acknowledge with")
    expect(choice).to_have_value("")
    expect(choice.locator("option")).to_have_text(["as the mailbox says", "detailed", "short"])
    choice.select_option("short")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Route Contoso saved.")).to_be_visible()
    expect(page.locator("li.route", has_text="Contoso")).to_contain_text('acknowledged with "short"')

    db.session.expire_all()
    route = db.session.scalar(select(Route).where(Route.name == "Contoso"))
    assert route.acknowledgement_variant == "short"
    page.get_by_role("link", name="Edit Contoso").click()
    expect(page.get_by_label("Acknowledge with")).to_have_value("short")

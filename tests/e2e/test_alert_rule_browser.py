"""An admin gives a route an alert rule in the browser; monitoring mail then keeps one ticket,
whose count the ticket list shows."""

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import Route
from tests.e2e.test_mailboxes_browser import sign_in
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def test_admin_edits_an_alert_rule_on_a_route(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    contoso = world.client(msp, "Contoso")
    box = world.mailbox(msp, address="alerts@demo.example", routes=[
        {"name": "Monitoring", "client": contoso, "recipients": ["alerts@demo.example"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    sign_in(page, live_server, "admin@demo.example")

    page.goto(f"{live_server}/mailboxes/{box.id}")
    page.get_by_role("link", name="Edit Monitoring").click()
    page.locator("#section-alert-rule summary").click()
    page.get_by_label("Alert rule: one ticket per open monitoring problem").check()
    page.get_by_label("Read the key from").select_option("header")
    page.get_by_label("Key header").fill("X-Alert-Key")
    page.get_by_label("Read the state from").select_option("header")
    page.get_by_label("State header").fill("X-Alert-State (typo: spaces)")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#alert_state_header-error")).to_contain_text("Name the header")
    page.get_by_label("State header").fill("X-Alert-State")
    page.get_by_label("Words meaning a recovery").fill("OK, RESOLVED")
    page.get_by_label("A recovery", exact=True).select_option("mark")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Route Monitoring saved.")).to_be_visible()

    db.session.expire_all()
    rule = db.session.scalar(select(Route).where(Route.name == "Monitoring")).alert_rule
    assert rule["key"] == {"from": "header", "header": "X-Alert-Key", "pattern": ""}
    assert rule["state"]["header"] == "X-Alert-State" and rule["recovery"] == ["OK", "RESOLVED"]
    assert rule["on_recovery"] == "mark"

    for state in ("CRITICAL", "CRITICAL", "OK"):
        world.deliver(db.session.merge(box), email(
            sender="rmm@contoso.example", to=["alerts@demo.example"], subject="Disk C: full on SRV01",
            headers={"X-Alert-Key": "srv01/disk-c", "X-Alert-State": state}))
    page.goto(f"{live_server}/tickets")
    row = page.locator("tr", has_text="Disk C: full on SRV01")
    expect(row).to_have_count(1)
    expect(row.locator(".badge.alert")).to_contain_text("3 alerts since")
    expect(row.get_by_text("recovered")).to_be_visible()

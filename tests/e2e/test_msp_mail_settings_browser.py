"""An MSP admin edits their MSP's own mail settings in the browser (issue #17): a value of their
own instead of the installation's, a wrong one named in place, their own gateway tested."""

import ipaddress
import re

import pytest
from playwright.sync_api import expect

from portal.outbound import settings as svc
from tests.conftest import PASSWORD
from tests.e2e.conftest import wait_for_htmx
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

pytestmark = pytest.mark.e2e


def test_an_msp_admin_edits_their_own_mail_settings(app, live_server, page, world, smtp_server, redis):
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    acme = world.msp("Acme MSP")
    world.user(acme, email="ana@acme.example")
    world.msp("Beta MSP")  # two MSPs: Ana is no operator
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Mail settings").click()
    expect(page.get_by_role("heading", name="Acme MSP")).to_be_visible()
    expect(page.get_by_role("heading", name="The installation's defaults")).to_have_count(0)

    form = page.locator("#msp-mail-form")
    inherit_limit = form.get_by_label("Use the installation's value: 10")
    expect(inherit_limit).to_be_checked()
    inherit_limit.uncheck()
    form.get_by_label("Most automatic mails one address gets in an hour").fill("0")
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#msp-auto_mail_limit_per_hour-error")).to_contain_text("1 to 1000")
    page.locator("#msp-mail-form").get_by_label("Most automatic mails one address gets in an hour").fill("3")
    form = page.locator("#msp-mail-form")
    form.get_by_label("Host").fill("127.0.0.1")
    form.get_by_label("Port").fill(str(smtp_server.port))
    form.get_by_label("Security").select_option("none")
    form.get_by_label("From address").fill("gw@acme.example")
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your MSP's mail settings saved.")).to_be_visible()
    expect(page.locator("#msp-limit")).to_have_value("3")
    expect(page.locator("#msp-inherit-auto_mail_limit_per_hour")).not_to_be_checked()
    expect(page.locator("#msp-inherit-block_outgoing")).to_be_checked()
    expect(page.locator("#msp-mail-history")).to_be_visible()
    assert svc.msp_own_settings(acme.id) == {"auto_mail_limit_per_hour": 3}

    wait_for_htmx(page)
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#msp-check-result")).to_contain_text(re.compile(r"Connected: connected to 127\.0\.0\.1"))
    page.get_by_label("Send a test email to").fill("qa@acme.example")
    page.get_by_role("button", name="Send test email").click()
    expect(page.locator("#msp-send-result")).to_contain_text("Sent to qa@acme.example through 127.0.0.1")
    assert smtp_server.last().message["From"] == "gw@acme.example"

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "tide pools at dawn"


def sign_in(page, live_server, email, password):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_admin_invites_and_the_invitee_sets_a_password_and_signs_in(live_server, page, world, chromium):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    sign_in(page, live_server, "admin@demo.example", PASSWORD)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Users")
    page.get_by_role("link", name="Invite a user").click()
    page.get_by_label("Email address").fill("nia@demo")
    page.get_by_role("button", name="Invite").click()
    # The form comes back in place (htmx, 422) with the wrong field named and focused.
    expect(page.locator("#email-error")).to_contain_text("not an email address like name@contoso.com")
    expect(page.get_by_label("Email address")).to_be_focused()

    page.get_by_label("Email address").fill("Nia@Demo.example")
    page.get_by_label("Name").fill("Nia New")
    page.get_by_label("Role").select_option("technician")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("nia@demo.example is invited as a technician.")).to_be_visible()
    link = page.get_by_label("Invitation link for nia@demo.example").input_value()
    assert re.match(re.escape(live_server) + r"/invitation/[\w.-]+$", link)

    page.get_by_role("link", name="Back to users").click()
    row = page.locator("tr", has_text="nia@demo.example")
    expect(row).to_contain_text("Invited")
    expect(row).to_contain_text("never")

    # The invitee, in a browser of their own.
    context = chromium.new_context()
    invitee = context.new_page()
    errors: list[str] = []
    invitee.on("pageerror", lambda exc: errors.append(str(exc)))
    invitee.on("console", lambda msg: errors.append(msg.text)
               if msg.type == "error" and "422" not in msg.text else None)
    invitee.goto(link)
    expect(invitee.get_by_role("heading", level=1)).to_have_text("Set your password")
    expect(invitee.get_by_text("invited to Demo MSP")).to_be_visible()
    invitee.get_by_label("New password").fill("too short")
    invitee.get_by_label("Repeat the password").fill("too short")
    invitee.get_by_role("button", name="Set password and sign in").click()
    expect(invitee.locator("#password-error")).to_contain_text("at least 10 characters")
    invitee.get_by_label("New password").fill(NEW_PASSWORD)
    invitee.get_by_label("Repeat the password").fill(NEW_PASSWORD)
    invitee.get_by_role("button", name="Set password and sign in").click()
    expect(invitee.get_by_text("Your password is set.")).to_be_visible()
    expect(invitee.locator(".who")).to_contain_text("Nia New")
    # Technicians have no users page in their menu.
    expect(invitee.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_count(0)

    # Signed out, the new password signs them in; the link is spent.
    invitee.get_by_role("button", name="Sign out").click()
    invitee.goto(link)
    expect(invitee.get_by_role("alert")).to_contain_text("has been used")
    sign_in(invitee, live_server, "nia@demo.example", NEW_PASSWORD)
    expect(invitee.locator(".who")).to_contain_text("Nia New")
    context.close()
    assert [e for e in errors if "400" not in e] == []

    # The admin sees the sign-in and the history.
    page.reload()
    row = page.locator("tr", has_text="nia@demo.example")
    expect(row).to_contain_text("Active")
    expect(row).not_to_contain_text("never")
    row.get_by_role("link").click()
    expect(page.locator("#history")).to_contain_text("set a password from the invitation")
    expect(page.locator("#history")).to_contain_text("invited")


def test_admin_checks_a_configuration_file_then_applies_it(live_server, page, world, tmp_path):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    sign_in(page, live_server, "admin@demo.example", PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Configuration").click()

    with page.expect_download() as download:
        page.get_by_role("button", name="Download YAML").click()
    assert "admin@demo.example" in download.value.path().read_text()

    broken = tmp_path / "broken.yaml"
    broken.write_text("clients:\n  - name: Demo MSP\n    children:\n      - {name: Contoso, colour: blue}\n")
    page.get_by_label("YAML file").set_input_files(str(broken))
    page.get_by_role("button", name="Check the file").click()
    expect(page.locator("#config-file-error")).to_contain_text("Unknown field: colour")

    good = tmp_path / "good.yaml"
    good.write_text("clients:\n  - name: Demo MSP\n    children:\n      - {name: Contoso, allow: [contoso.com]}\n")
    page.get_by_label("YAML file").set_input_files(str(good))
    page.get_by_role("button", name="Check the file").click()
    preview = page.locator(".import-preview")
    expect(preview).to_contain_text("Contoso")
    expect(preview).to_contain_text("would be created")
    page.get_by_role("button", name="Apply these changes").click()
    expect(page.get_by_text("Configuration imported: 1 created")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/settings/configuration$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Clients").click()
    expect(page.locator("#client-tree")).to_contain_text("Contoso")


def test_a_user_picks_a_time_zone_in_my_settings(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="tech@demo.example", role="technician")
    sign_in(page, live_server, "tech@demo.example", PASSWORD)
    page.get_by_role("link", name="My settings").click()
    page.get_by_label("Time zone", exact=True).select_option("Asia/Tokyo")
    page.get_by_label("Name", exact=True).fill("Tess Tech")
    page.locator("#profile-form").get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    expect(page.get_by_label("Time zone", exact=True)).to_have_value("Asia/Tokyo")
    expect(page.locator(".who")).to_contain_text("Tess Tech")

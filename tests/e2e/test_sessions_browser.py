"""Sign-out in a real browser ends "keep me signed in" too, and a saved remember cookie is spent."""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

REMEMBER = "remember_token"


def test_sign_out_ends_keep_me_signed_in_and_its_copied_cookie(live_server, page, world, chromium):
    world.user(world.msp("Demo MSP"), email="ana@demo.example")
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Keep me signed in on this device").check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who")).to_contain_text("ana@demo.example")
    saved = [c for c in page.context.cookies() if c["name"] == REMEMBER]
    assert len(saved) == 1

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert [c for c in page.context.cookies() if c["name"] == REMEMBER] == []
    page.goto(live_server + "/")
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Tidemark")

    # A copy of the old remember cookie, in a browser of its own, signs nobody in.
    other = chromium.new_context()
    other.add_cookies(saved)
    stranger = other.new_page()
    stranger.goto(live_server + "/clients")
    expect(stranger).to_have_url(re.compile(r"/sign-in\?next="))
    expect(stranger.locator(".who")).to_have_count(0)
    other.close()


def test_sign_out_everywhere_asks_first_and_ends_the_other_browser_too(live_server, page, world, chromium):
    world.user(world.msp("Demo MSP"), email="ana@demo.example")
    browsers = []
    for p in (page, chromium.new_context().new_page()):
        p.goto(live_server + "/sign-in")
        p.get_by_label("Email address").fill("ana@demo.example")
        p.get_by_label("Password").fill(PASSWORD)
        p.get_by_role("button", name="Sign in").click()
        expect(p.locator(".who")).to_contain_text("ana@demo.example")
        browsers.append(p)
    laptop = browsers[1]

    page.goto(live_server + "/account")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Sign out everywhere").click()
    page.goto(live_server + "/account")
    expect(page.get_by_role("heading", level=1)).to_have_text("My settings")  # "Cancel" changed nothing

    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Sign out everywhere").click()
    expect(page.get_by_text("You are signed out on every device.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert "this one too" in messages[0]
    laptop.goto(live_server + "/clients")
    expect(laptop).to_have_url(re.compile(r"/sign-in\?next="))
    laptop.context.close()

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e


def test_admin_creates_a_sub_client_and_sees_it_in_the_tree_and_the_audit(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")

    page.goto(live_server + "/clients")
    expect(page).to_have_url(re.compile(r"/sign-in"))
    page.get_by_label("Email address").fill("admin@demo.example")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("email address or password is not right")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/clients$"))

    page.get_by_role("link", name="Add a client").click()
    page.get_by_label("Name").fill("Contoso")
    page.get_by_label("Allow-list").fill("Contoso.com\nnot-valid!")
    page.get_by_label("Waterline").fill("Best regards")
    page.get_by_role("button", name="Create client").click()
    # The form comes back in place (htmx, 422) with the wrong entry named and focused.
    expect(page.locator("#allow-error")).to_contain_text("not-valid!")
    expect(page.get_by_label("Allow-list")).to_be_focused()

    page.get_by_label("Allow-list").fill("Contoso.com\nBoss@GMail.com")
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("Contoso"))
    expect(page.get_by_text("Client Contoso created.")).to_be_visible()
    expect(page.locator(".allow")).to_contain_text("contoso.com")
    expect(page.locator(".allow")).to_contain_text("boss@gmail.com")
    history = page.locator("#history")
    expect(history).to_contain_text("admin@demo.example")
    expect(history).to_contain_text("created")
    expect(history).to_contain_text("Best regards")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Clients").click()
    tree = page.locator("#client-tree")
    expect(tree).to_contain_text("Contoso")
    page.get_by_label("Find a client").fill("conto")
    expect(tree.locator("tbody tr")).to_have_count(2)  # Contoso and its MSP above it


def test_disabling_asks_first_and_is_recorded(live_server, page, world):
    msp = world.msp("Demo MSP")
    world.user(msp, email="admin@demo.example")
    client = world.client(msp, "Fabrikam")
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("admin@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/clients/{client.id}")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()  # dismissed: nothing happened

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_text("This client is disabled.")).to_be_visible()
    expect(page.locator("#history")).to_contain_text("disabled")
    expect(page.get_by_role("button", name="Enable")).to_be_visible()

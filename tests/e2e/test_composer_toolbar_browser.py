"""The composer's toolbar in a real browser: buttons say whether their format is on
(aria-pressed), and italic switched off stays off after Enter."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_composer_browser import desk, sign_in  # noqa: F401 - the same ticket and sign-in

pytestmark = pytest.mark.e2e


def test_toolbar_buttons_show_their_state_and_italic_does_not_come_back_after_enter(live_server, page, desk):  # noqa: F811
    sign_in(page, live_server)
    page.goto(f"{live_server}/tickets/{desk.reference}")
    editor = page.locator(".composer-editor")
    italic = page.get_by_role("button", name="Italic")
    bold = page.get_by_role("button", name="Bold")
    editor.click()
    expect(italic).to_have_attribute("aria-pressed", "false")
    expect(bold).to_have_attribute("aria-pressed", "false")
    page.keyboard.type("Plain ")
    italic.click()
    expect(italic).to_have_attribute("aria-pressed", "true")
    page.keyboard.type("slanted")
    expect(editor.locator("i")).to_have_text("slanted")
    expect(italic).to_have_attribute("aria-pressed", "true")
    italic.click()
    expect(italic).to_have_attribute("aria-pressed", "false")
    page.keyboard.press("Enter")
    expect(italic).to_have_attribute("aria-pressed", "false")  # a person types after the line is split
    page.keyboard.type("upright")
    expect(italic).to_have_attribute("aria-pressed", "false")
    expect(editor.locator("i")).to_have_text("slanted")  # the new line is not italic
    assert "upright" not in editor.locator("i").all_inner_texts()[0]
    expect(editor).to_contain_text("upright")
    page.keyboard.press("Enter")
    page.keyboard.type("still upright")
    expect(editor.locator("i")).to_have_count(1)
    bold.click()
    expect(bold).to_have_attribute("aria-pressed", "true")
    page.keyboard.type("strong")
    expect(editor.locator("b")).to_have_text("strong")
    editor.locator("i").click()  # the caret in the italic word: the buttons follow it
    expect(italic).to_have_attribute("aria-pressed", "true")
    expect(bold).to_have_attribute("aria-pressed", "false")

"""The rich-text template in a real browser: typed in the simple editor with a variable chip,
saved, and previewed as both parts made from the one body."""

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import EmailTemplate
from tests.conftest import PASSWORD
from tests.e2e.conftest import wait_for_htmx

pytestmark = pytest.mark.e2e


def test_the_simple_editor_makes_both_parts_from_one_body(live_server, page, acme):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/clients/{acme.contoso.id}/emails/closed")
    expect(page.get_by_role("link", name="Simple editor")).to_have_attribute("aria-current", "page")
    editor = page.locator(".composer-editor")
    expect(editor).to_contain_text("we have closed ticket {{ ticket.reference }}")  # the built-in text to start from
    expect(page.locator("#body-text")).to_be_hidden()
    wait_for_htmx(page)
    page.get_by_label("Subject").fill("Done: {{ ticket.reference }}")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type("Thanks for your patience, ")
    page.get_by_role("button", name="contact.name", exact=True).click()
    expect(editor).to_contain_text("Thanks for your patience, {{ contact.name }}")
    # The live check renders the body as typed, for the sample ticket.
    expect(page.locator("#template-check")).to_contain_text("Thanks for your patience, Anna Müller")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-success")).to_contain_text("closed template of Contoso is saved")
    row = db.session.scalar(select(EmailTemplate).where(EmailTemplate.event == "closed"))
    assert row.subject == "Done: {{ ticket.reference }}" and row.text_source is None
    assert "Thanks for your patience,&nbsp;{{ contact.name }}" in row.body  # as the editor wrote it

    page.goto(f"{live_server}/clients/{acme.contoso.id}/emails/closed")
    expect(page.locator(".composer-editor")).to_contain_text("Thanks for your patience, {{ contact.name }}")
    page.get_by_role("button", name="Show the HTML preview").click()
    frame = page.frame_locator("iframe[name=preview-frame]")
    expect(frame.locator("td.card")).to_contain_text("Thanks for your patience, Anna Müller")  # the HTML part
    expect(frame.locator("#text-part")).to_contain_text("Thanks for your patience, Anna Müller")  # the text part
    expect(frame.locator("body")).to_contain_text("Subject: Done: T-1042")

"""The reply composer in a real browser under the portal's Content-Security-Policy: rich text,
a canned response, the ticket history, a pasted image and a file, and the form without JavaScript.
(The page fixture fails the test on any script error or CSP violation.)"""

import base64

import pytest
from playwright.sync_api import expect

from portal.services import canned, commit
from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

PASTE_IMAGE = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "shot.png", {type: "image/png"}));
  const event = new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true});
  document.querySelector(".composer-editor").dispatchEvent(event);
}"""


@pytest.fixture
def desk(world, acme, smtp_gateway):
    canned.save(acme.msp, name="Restart steps", html="<p>Switch it <b>off</b> and on again.</p>", shared=True)
    commit()
    return world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer",
                                         body="It prints <blank> pages.")).ticket


def sign_in(page, live_server):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("tom@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_rich_reply_with_canned_text_history_image_and_file_arrives(live_server, page, desk, smtp_server, tmp_path):
    ticket = desk
    sign_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tickets").click()
    page.get_by_role("link", name=ticket.reference).click()
    editor = page.locator(".composer-editor")
    expect(editor).to_be_visible()
    expect(page.locator("#reply-text")).to_be_hidden()

    editor.click()
    page.keyboard.type("Hello Alice, ")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("please try this")
    expect(editor.locator("b")).to_have_text("please try this")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.press("Enter")
    page.get_by_label("Canned response").select_option(label="Restart steps (Acme MSP)")
    expect(editor).to_contain_text("Switch it off and on again.")
    page.get_by_role("button", name="Insert ticket history").click()
    expect(editor.locator("blockquote")).to_contain_text("It prints <blank> pages.")
    expect(editor).to_contain_text("alice@contoso.com wrote:")
    page.evaluate(PASTE_IMAGE, PNG_B64)
    expect(editor.locator("img")).to_have_count(1)
    editor.locator("img").click()  # Squire's resize handles would break the policy: none appear
    assert page.locator(".squire-image-resize-container").count() == 0
    log = tmp_path / "printer.log"
    log.write_text("paper jam at tray 2\n")
    page.get_by_label("Attach files").set_input_files(str(log))

    # A wrong address: the form comes back with the editor and its text (and image) intact.
    page.get_by_label("To", exact=True).fill("alice@")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#reply-to-error")).to_contain_text("not an email address")
    editor = page.locator(".composer-editor")
    expect(editor).to_contain_text("Switch it off and on again.")
    expect(editor.locator("img")).to_have_count(1)
    expect(page.get_by_text("Choose the files again: printer.log.")).to_be_visible()
    page.get_by_label("To", exact=True).fill("alice@contoso.com")
    page.get_by_label("Attach files").set_input_files(str(log))
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_text("Reply queued")).to_be_visible()
    expect(page.locator(".msg-out .delivery")).to_contain_text("sent")

    mail = smtp_server.last().message
    html = mail.get_body(("html",)).get_content()
    assert "<b>please try this</b>" in html and "<b>off</b>" in html
    assert "It prints &lt;blank&gt; pages." in html and "blockquote" in html
    text = mail.get_body(("plain",)).get_content()
    assert "Hello Alice, please try this" in text and "Switch it off and on again." in text
    related = next(p for p in mail.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image.get_content() == base64.b64decode(PNG_B64)
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html
    files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
    assert files == {"printer.log": "paper jam at tray 2\n"}
    # The sent reply shows on the ticket with its image served by the portal.
    expect(page.locator(".msg-out .mail-html img")).to_have_count(1)
    expect(page.get_by_role("link", name="printer.log")).to_be_visible()


def test_without_javascript_the_form_posts_plain_text(chromium, live_server, desk, smtp_server):
    ticket = desk
    context = chromium.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, live_server)
        page.goto(f"{live_server}/tickets/{ticket.reference}")
        assert page.locator(".composer-editor").count() == 0
        expect(page.get_by_role("button", name="Insert ticket history")).to_be_hidden()
        page.get_by_label("Message").fill("Plain <text> reply.\nSecond line.")
        page.get_by_role("button", name="Send reply").click()
        expect(page.get_by_text("Reply queued")).to_be_visible()
    finally:
        context.close()
    text = smtp_server.last().message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Plain <text> reply.\nSecond line." in text


def test_an_admin_writes_a_canned_response_in_the_editor(live_server, page, desk):
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import CannedResponse

    contoso = desk.client  # ana@acme.example is its MSP's admin (the acme fixture)
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill("ana@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/clients/{contoso.id}/emails")
    page.get_by_role("link", name="Canned responses of Contoso").click()
    page.get_by_role("link", name="New canned response").click()
    page.get_by_label("Name", exact=True).fill("Escalated")
    editor = page.locator(".composer-editor")
    editor.click()
    page.keyboard.type("We passed this to our ")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("network team")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The canned response 'Escalated' of Contoso is saved.")).to_be_visible()
    expect(page.get_by_role("cell", name="Escalated")).to_be_visible()
    saved = db.session.scalar(select(CannedResponse).where(CannedResponse.name == "Escalated"))
    assert "<b>network team</b>" in saved.body_html and saved.client_id == contoso.id

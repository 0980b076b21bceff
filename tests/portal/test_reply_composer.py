"""The reply composer on the ticket page: rich text, ticket history, files and inline images."""

import base64
import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Attachment, Message
from portal.models.base import utcnow
from portal.outbound.templates import save_template
from portal.services import commit, ticket_replies
from tests.mailfactory import email

# A 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture
def desk(acme, smtp_gateway):
    return acme.msp, acme.box


@pytest.fixture
def ticket(world, desk):
    return world.deliver(desk[1], email(sender="alice@contoso.com", subject="Printer", body="It prints blank pages.")).ticket


def reply(tech, ticket, **data):
    form = {"to": "alice@contoso.com", "cc": "", "text": "", "html": "", "set_status": "", **data}
    return tech.post(f"/tickets/{ticket.reference}/reply", form, content_type="multipart/form-data")


def test_the_page_has_the_editor_wiring_and_still_a_plain_textarea(tech, ticket):
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert 'textarea id="reply-text" name="text"' in page  # what posts without JavaScript
    assert 'name="html" data-composer-html hidden' in page
    assert "vendor/squire/squire-2.4.8.min.js" in page and "composer.js" in page
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<input (?=[^>]*\bmultiple\b)[^>]*name="attachments"', page)
    assert "Up to 10 MB each and 25 MB in all" in page
    assert f"/tickets/{ticket.reference}/history" in page
    assert " style=" not in page and "onclick" not in page  # the page's policy allows neither


def test_rich_text_is_sanitised_and_the_text_part_derived_from_it(tech, ticket, smtp_server):
    resp = reply(tech, ticket, text="ignored when html is given",
                 html='<div>Please <b>restart</b> the <a href="https://acme.example/kb">printer</a>.</div>'
                      '<script>alert(1)</script><img src="x" onerror="alert(2)"><ul><li>then print</li></ul>')
    assert resp.status_code == 303
    out = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert "<b>restart</b>" in out.body_html and "script" not in out.body_html and "onerror" not in out.body_html
    assert "Please restart the printer." in out.body_text and "then print" in out.body_text
    assert "ignored" not in out.body_text
    mail = smtp_server.last().message
    html = mail.get_body(("html",)).get_content()
    assert "<b>restart</b>" in html and "alert(" not in html
    text = mail.get_body(("plain",)).get_content()
    assert "Please restart the printer." in text and "<b>" not in text
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "<b>restart</b>" in page and "alert(1)" not in page  # the reply shows as sent, sanitised


def test_an_empty_editor_is_an_empty_reply(tech, ticket, smtp_server):
    resp = reply(tech, ticket, html="<div><br></div>", text="")
    assert resp.status_code == 422 and "Write the reply." in resp.get_data(as_text=True)
    assert smtp_server.messages == []


def test_files_and_pasted_images_go_out_and_can_be_downloaded(tech, ticket, smtp_server):
    resp = reply(tech, ticket, html='<div>See the log and this:<img src="cid:img1-abc.png" alt="shot"></div>',
                 attachments=[(io.BytesIO(b"line 1\nline 2\n"), "printer.log", "text/plain"),
                              (io.BytesIO(b"%PDF-1.4 fake"), "..\\..\\manual.pdf", "application/pdf")],
                 inline_images=[(io.BytesIO(PNG), "img1-abc.png", "image/png"),
                                (io.BytesIO(PNG), "img2-unused.png", "image/png")])
    assert resp.status_code == 303
    out = db.session.scalar(select(Message).where(Message.direction == "out"))
    stored = {a.filename: a for a in out.attachments}
    assert set(stored) == {"printer.log", "manual.pdf", "img1-abc.png"}  # an image no longer in the text is dropped
    assert stored["img1-abc.png"].inline and stored["img1-abc.png"].content_id == "img1-abc.png"
    mail = smtp_server.last().message
    assert mail.get_content_type() == "multipart/mixed"
    files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
    assert files["printer.log"] == "line 1\nline 2\n" and files["manual.pdf"] == b"%PDF-1.4 fake"
    related = next(p for p in mail.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<img1-abc.png>" and image.get_content() == PNG
    assert 'src="cid:img1-abc.png"' in mail.get_body(("html",)).get_content()

    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    url = f"/tickets/{ticket.reference}/attachments/{stored['manual.pdf'].id}"
    assert url in page and ">img1-abc.png</a>" not in page  # the image is in the text, not a file in the list
    assert f'src="/tickets/{ticket.reference}/attachments/{stored["img1-abc.png"].id}"' in page  # cid: shown
    download = tech.get(url)
    assert download.data == b"%PDF-1.4 fake" and download.mimetype == "application/octet-stream"
    assert "attachment" in download.headers["Content-Disposition"] and "manual.pdf" in download.headers["Content-Disposition"]
    assert "sandbox" in download.headers["Content-Security-Policy"]
    picture = tech.client.get(f"/tickets/{ticket.reference}/attachments/{stored['img1-abc.png'].id}")  # binary
    assert picture.mimetype == "image/png" and picture.data == PNG


def test_an_image_left_as_a_data_url_becomes_a_cid_part(tech, ticket, smtp_server):
    data = base64.b64encode(PNG).decode()
    assert reply(tech, ticket, html=f'<p>Look: <img src="data:image/png;base64,{data}"></p>').status_code == 303
    out = db.session.scalar(select(Message).where(Message.direction == "out"))
    (image,) = out.attachments
    assert image.inline and image.data == PNG and f'src="cid:{image.content_id}"' in out.body_html
    assert "data:image" not in smtp_server.last().message.get_body(("html",)).get_content()


def test_too_big_files_are_refused_next_to_the_field(app, tech, ticket, smtp_server):
    app.config["TIDEMARK_REPLY_FILE_MAX_BYTES"] = 1000
    app.config["TIDEMARK_REPLY_FILES_MAX_BYTES"] = 1500
    resp = reply(tech, ticket, html='<p>Logs <img src="cid:img1-x.png"></p>',
                 attachments=[(io.BytesIO(b"x" * 1001), "big.log"), (io.BytesIO(b"y" * 900), "small.log")],
                 inline_images=[(io.BytesIO(PNG), "img1-x.png", "image/png")])
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and smtp_server.messages == []
    assert 'id="reply-files-error"' in body and "big.log is more than 1 KB" in body
    assert "The files add up to 2 KB; a reply may carry at most 1 KB in all." in body
    assert "Choose the files again: big.log, small.log." in body
    # The pasted image comes back inside the text, so the editor can show it again.
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in body
    assert db.session.scalar(select(Attachment)) is None


def test_a_request_over_the_whole_limit_is_refused_in_plain_words_and_long_html_is_taken(app, tech, ticket,
                                                                                         smtp_server):
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    resp = reply(tech, ticket, text="see file", attachments=[(io.BytesIO(b"z" * (3 * 1024 * 1024)), "huge.bin")])
    assert resp.status_code == 413 and "at most 2 MB at once" in resp.get_data(as_text=True)
    assert db.session.scalar(select(Attachment)) is None
    # A long reply with its quoted history is more than Flask's default 500 KB for one field.
    long_html = "<p>" + "history line<br>" * 60_000 + "</p>"
    assert len(long_html) > 600_000
    assert reply(tech, ticket, html=long_html).status_code in (200, 302, 303)


def test_history_is_quoted_newest_first_escaped_and_without_notes(world, tech, desk, ticket, smtp_server):
    box = desk[1]
    later = world.deliver(box, email(sender="Alice <alice@contoso.com>", subject="Re: [T-1] Printer",
                                     body="Still <b>blank</b> & broken", in_reply_to=ticket.messages[0].message_id))
    assert later.ticket.id == ticket.id
    tech.post(f"/tickets/{ticket.reference}/note", {"note": "secret internal note"})
    reply(tech, ticket, text="Try the other tray.")
    sent = db.session.scalar(select(Message).where(Message.direction == "out"))
    sent.sent_at = utcnow() + timedelta(minutes=5)
    commit()
    quoted = tech.get(f"/tickets/{ticket.reference}/history").get_data(as_text=True)
    assert "secret internal note" not in quoted
    assert "Still &lt;b&gt;blank&lt;/b&gt; &amp; broken" in quoted and "<b>blank" not in quoted
    positions = [quoted.index(s) for s in ("Try the other tray.", "Still &lt;b&gt;", "It prints blank pages.")]
    assert positions == sorted(positions)  # newest first
    assert "tom@acme.example wrote:" in quoted and "Alice wrote:" in quoted
    assert quoted.count('<blockquote type="cite">') == 3


def test_history_leaves_out_automatic_mail_and_unsent_replies(app, world, desk, ticket):
    from portal.outbound.outbox import queue_mail

    app.config["TIDEMARK_JOBS_SYNC"] = False  # the outbox rows stay as written here: no sender runs
    queue_mail("ticket_created", msp_id=ticket.msp_id, ticket=ticket, to=["alice@contoso.com"],
               body_text="We got your mail (acknowledgement)").delivery = "sent"
    queue_mail("reply", msp_id=ticket.msp_id, ticket=ticket, to=["alice@contoso.com"], body_text="never went out")
    commit()
    from zoneinfo import ZoneInfo

    quoted = ticket_replies.quoted_history(ticket, ZoneInfo("Europe/Berlin"))
    assert "acknowledgement" not in quoted and "never went out" not in quoted
    assert "It prints blank pages." in quoted and ("CET" in quoted or "CEST" in quoted)


def test_attachments_and_history_of_another_msp_answer_404(world, make_browser, tech, ticket):
    other = world.msp("Other MSP")
    their_box = world.mailbox(other, address="help@other.example", acknowledge=False)
    theirs = world.deliver(their_box, email(sender="x@y.example", to=["help@other.example"],
                                            attachments=[("secret.txt", "text/plain", b"their secret")]))
    their_file = theirs.message.attachments[0]
    assert tech.get(f"/tickets/{ticket.reference}/attachments/{their_file.id}").status_code == 404
    world.user(other, email="olga@other.example", role="technician")
    olga = make_browser()
    olga.sign_in("olga@other.example")
    assert olga.get(f"/tickets/{theirs.ticket.reference}/attachments/{their_file.id}").data == b"their secret"
    # Each MSP numbers its own tickets: the same reference is another ticket there.
    assert theirs.ticket.reference == ticket.reference
    their_history = olga.get(f"/tickets/{ticket.reference}/history").get_data(as_text=True)
    assert "It burns." in their_history and "It prints blank pages." not in their_history
    second = world.deliver(their_box, email(sender="x@y.example", to=["help@other.example"], subject="Another"))
    assert tech.get(f"/tickets/{second.ticket.reference}/history").status_code == 404


def test_automatic_mail_is_not_shown_as_html_only_replies_are(app, tech, ticket):
    from portal.outbound.outbox import queue_mail

    app.config["TIDEMARK_JOBS_SYNC"] = False  # the outbox row stays as written here: no sender runs
    queue_mail("ticket_created", msp_id=ticket.msp_id, ticket=ticket, to=["alice@contoso.com"],
               body_text="We got your mail.", body_html="<style>body{display:none}</style><p>We got your mail.</p>")
    commit()
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "We got your mail." in page and "<style>" not in page and "display:none" not in page


def plain(mail) -> str:
    return mail.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_the_signature_is_shown_editable_and_sent_exactly_as_shown(tech, ticket, smtp_server):
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert re.search(r'<textarea[^>]*id="reply-signature"[^>]*>\s*tom@acme.example\nAcme MSP</textarea>', page)
    resp = reply(tech, ticket, html="<div>Hello Alice,</div><div><br></div><div>please restart it.</div>"
                                    "<div>Then print a test page.</div>",
                 signature="Tom (2nd line)\r\nAcme MSP · on call\r\n")
    assert resp.status_code == 303
    mail = smtp_server.last().message
    text = plain(mail)
    assert "Hello Alice,\n\nplease restart it.\nThen print a test page.\n\n--\nTom (2nd line)\nAcme MSP · on call\n" in text
    assert not [line for line in text.splitlines() if line.startswith(" ")]  # nothing indented
    assert text.count("tom@acme.example") == 0  # no second, hidden sign-off
    html = mail.get_body(("html",)).get_content()
    assert "Tom (2nd line)<br>Acme MSP · on call" in html and "tom@acme.example" not in html


def test_a_cleared_signature_sends_none_and_a_client_without_the_field_gets_the_default(tech, ticket, smtp_server):
    reply(tech, ticket, text="First.", signature="")
    text = plain(smtp_server.last().message)
    assert "First." in text and "--" not in text and "Acme MSP" not in text.split("First.")[1]
    form = {"to": "alice@contoso.com", "cc": "", "text": "Second.", "html": "", "set_status": ""}
    tech.post(f"/tickets/{ticket.reference}/reply", form, content_type="multipart/form-data")
    assert "Second.\n\n--\ntom@acme.example\nAcme MSP\n" in plain(smtp_server.last().message)


def test_the_msps_reply_template_reaches_a_client_without_its_own_through_delivery(world, tech, desk, ticket,
                                                                                  smtp_server):
    msp = desk[0]
    assert ticket.client_id != msp.id
    row = save_template(msp, "reply", "From the MSP: {{ ticket.reference }}\n{{ message.text }}\n{{ message.signature }}",
                        "", False, None)
    assert row.shared is True
    row.shared = False  # saved unshared before the rule: still the MSP's, still applies
    commit()
    reply(tech, ticket, text="Done.", signature="Tom")
    mail = smtp_server.last().message
    assert mail["Subject"].endswith(f"From the MSP: {ticket.reference}")
    assert plain(mail).startswith("Done.\nTom")


def test_a_custom_reply_template_without_the_signature_says_so_instead_of_offering_it(tech, desk, ticket):
    save_template(desk[0], "reply", "Re: {{ ticket.subject }}\n{{ message.text }}\n-- \nThe Acme desk", "", True, None)
    commit()
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert 'id="reply-signature"' not in page and "signs off in its own way" in page

"""Technicians working tickets in the browser: list, read, reply, note."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, Ticket
from portal.services import commit
from tests.mailfactory import email


@pytest.fixture
def desk(acme, smtp_gateway):
    return acme.msp, acme.contoso, acme.box


def test_list_shows_work_to_do_with_filters_and_search(world, tech, desk):
    _msp, contoso, box = desk
    world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire", body="toner everywhere"))
    second = world.deliver(box, email(sender="x@elsewhere.example", subject="VPN down"))
    second.ticket.status = "closed"
    commit()
    page = tech.get("/tickets").get_data(as_text=True)
    assert "Printer on fire" in page and "VPN down" not in page  # closed is not work to do
    assert "VPN down" in tech.get("/tickets?status=closed").get_data(as_text=True)
    fragment = tech.hx_get("/tickets?q=toner").get_data(as_text=True)
    assert "<html" not in fragment and "Printer on fire" in fragment
    assert "T-1" in tech.hx_get("/tickets?q=t-1").get_data(as_text=True)
    assert "No ticket matches" in tech.hx_get(f"/tickets?client={contoso.id}&q=vpn").get_data(as_text=True)


def test_inbound_html_is_shown_sanitised_with_the_trace(world, tech, desk):
    html = ('<p>Hello <b>team</b></p><script>alert(1)</script><img src="x" onerror="alert(2)">'
            '<a href="javascript:alert(3)">click</a>')
    result = world.deliver(desk[2], email(sender="alice@contoso.com", html=html))
    page = tech.get(f"/tickets/{result.ticket.reference}").get_data(as_text=True)
    assert "<b>team</b>" in page
    assert "<script>alert(1)" not in page and "onerror" not in page and "javascript:" not in page
    assert "How it was decided" in page and "domain contoso.com is on an allow-list" in page
    db.session.refresh(result.ticket)
    assert result.ticket.new_information is False  # read by a technician


def test_an_image_the_html_shows_is_in_the_text_not_in_the_attachment_list(world, tech, desk):
    from tests.mail.test_parse import _related_mail

    raw = _related_mail(From="alice@contoso.com", To="support@acme.example", Subject="Screenshot")
    result = world.deliver(desk[2], raw)
    ref = result.ticket.reference
    by_name = {a.filename: a for a in result.message.attachments}
    assert by_name["shot.png"].inline and by_name["logo.gif"].inline and not by_name["unused.png"].inline
    page = tech.get(f"/tickets/{ref}").get_data(as_text=True)
    listed = page[page.index('<ul class="attachments">'):]
    listed = listed[:listed.index("</ul>")]
    for name in ("shot.png", "logo.gif"):
        url = f"/tickets/{ref}/attachments/{by_name[name].id}"
        assert f'src="{url}"' in page and name not in listed  # shown in the body, not listed
    assert "unused.png" in listed  # the HTML does not show it: a file like any other
    assert tech.client.get(f"/tickets/{ref}/attachments/{by_name['shot.png'].id}").data == b"\x89PNG\r\n\x1a\n"


def test_reply_reaches_the_customer_and_the_answer_comes_back_to_the_ticket(world, tech, desk, smtp_server):
    first = world.deliver(desk[2], email(sender="alice@contoso.com", cc=["bob@contoso.com"], subject="Printer"))
    ref = first.ticket.reference
    page = tech.get(f"/tickets/{ref}").get_data(as_text=True)
    assert 'value="alice@contoso.com"' in page and 'value="bob@contoso.com"' in page  # prefilled
    resp = tech.post(f"/tickets/{ref}/reply", {"to": "alice@contoso.com", "cc": "bob@contoso.com",
                                               "text": "Turn it off and on again.", "set_status": "waiting"})
    assert resp.status_code == 303
    sent = smtp_server.last()
    assert sorted(sent.rcpt_tos) == ["alice@contoso.com", "bob@contoso.com"]
    mail = sent.message
    assert "Turn it off and on again." in mail.get_body(("plain",)).get_content()
    assert mail["In-Reply-To"] == first.message.message_id and "[T-1]" in mail["Subject"]
    assert "Auto-Submitted" not in mail  # a person wrote it
    ticket = db.session.get(Ticket, first.ticket.id)
    assert ticket.status == "waiting"
    answer = world.deliver(desk[2], email(sender="alice@contoso.com", subject="Re: " + mail["Subject"],
                                          in_reply_to=mail["Message-ID"], body="Works now!"))
    assert answer.ticket.id == ticket.id and answer.ticket.status == "open"  # waiting → open
    assert "sent" in tech.get(f"/tickets/{ref}").get_data(as_text=True)


def test_reply_with_a_wrong_address_says_which_field(world, tech, desk, smtp_server):
    first = world.deliver(desk[2], email())
    resp = tech.post(f"/tickets/{first.ticket.reference}/reply", {"to": "alice@", "cc": "", "text": ""})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "not an email address" in body and "Write the reply." in body
    assert smtp_server.messages == []


def test_internal_note_is_never_emailed(world, tech, desk, smtp_server):
    first = world.deliver(desk[2], email())
    tech.post(f"/tickets/{first.ticket.reference}/note", {"note": "Customer called, printer is a Brother."})
    note = db.session.scalar(select(Message).where(Message.direction == "note"))
    assert note.body_text.startswith("Customer called") and note.delivery is None
    assert smtp_server.messages == []
    assert "Internal note by" in tech.get(f"/tickets/{first.ticket.reference}").get_data(as_text=True)


def test_with_htmx_a_note_answers_its_own_part_of_the_page(world, tech, desk):
    ref = world.deliver(desk[2], email()).ticket.reference
    empty = tech.post(f"/tickets/{ref}/note", {"note": "  "}, htmx=True)
    body = empty.get_data(as_text=True)
    assert empty.status_code == 422 and "<html" not in body and 'id="ticket-note"' in body
    assert 'aria-invalid="true"' in body and "HX-Redirect" not in empty.headers
    added = tech.post(f"/tickets/{ref}/note", {"note": "Customer called."}, htmx=True)
    body = added.get_data(as_text=True)
    assert added.status_code == 200 and "HX-Redirect" not in added.headers and "<html" not in body
    assert "Internal note added." in body and body.index('id="ticket-note"') < body.index("Customer called.")
    assert 'id="ticket-conversation" hx-swap-oob="true"' in body  # the note shows in the conversation
    assert "Internal note added." not in tech.get(f"/tickets/{ref}").get_data(as_text=True)  # said once


def test_with_htmx_a_reply_error_answers_the_composer_and_a_sent_reply_the_whole_page(world, tech, desk):
    ref = world.deliver(desk[2], email()).ticket.reference
    wrong = tech.post(f"/tickets/{ref}/reply", {"to": "alice@", "cc": "", "text": "Hi"}, htmx=True)
    body = wrong.get_data(as_text=True)
    assert wrong.status_code == 422 and "<html" not in body and 'id="ticket-reply"' in body
    assert "not an email address" in body and 'value="alice@"' in body and ">Hi</textarea>" in body
    sent = tech.post(f"/tickets/{ref}/reply", {"to": "alice@contoso.com", "cc": "", "text": "Hi"}, htmx=True)
    assert sent.headers["HX-Redirect"] == f"/tickets/{ref}"


def test_source_is_plain_text_never_rendered(world, tech, desk):
    raw = email(html="<script>alert(1)</script><p>x</p>")
    first = world.deliver(desk[2], raw)
    resp = tech.get(f"/tickets/{first.ticket.reference}/messages/{first.message.id}/source")
    assert resp.mimetype == "text/plain" and resp.data == raw


@pytest.mark.parametrize("method, path", [("GET", ""), ("POST", "/reply"), ("POST", "/note"), ("POST", "/fields"),
                                          ("GET", "/messages/1/source")])
def test_another_msps_tickets_answer_404(world, browser, desk, method, path):
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    theirs = world.deliver(world.mailbox(other, address="help@other.example"), email(to=["help@other.example"]))
    ours = world.deliver(desk[2], email())
    assert theirs.ticket.reference == ours.ticket.reference == "T-1"  # same reference, different MSP
    browser.sign_in("eve@other.example")
    # Eve's own T-1 is hers; ours she can never reach by any id.
    url = f"/tickets/T-1{path}".replace("/messages/1/", f"/messages/{ours.message.id}/")
    resp = browser.get(url) if method == "GET" else browser.post(url, {"to": "x@y.example", "text": "hi",
                                                                       "note": "n", "status": "closed"})
    if path == "/messages/1/source":
        assert resp.status_code == 404
    db.session.expire_all()
    assert db.session.get(Ticket, ours.ticket.id).status == "new"
    assert db.session.scalar(select(Message).where(Message.ticket_id == ours.ticket.id, Message.direction != "in")) is None

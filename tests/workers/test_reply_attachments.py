"""A technician's reply with files and inline images, sent by the sender job to a real SMTP
server (aiosmtpd on loopback): the mail that arrives carries them, in the right MIME shape."""

import base64
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, User
from portal.models.base import utcnow
from portal.services import commit, ticket_replies
from portal.services.ticket_replies import ReplyFile
from tests.mailfactory import email

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40  # binary, past the first line


@pytest.fixture
def setup(app, world, smtp_gateway):
    app.config["TIDEMARK_MAIL_HOST"] = "tidemark.test"
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False, response_address="help@acme.example")
    tom = world.user(msp, email="tom@acme.example", role="technician")
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    return ticket, db.session.get(User, tom.id)


def test_the_received_mail_carries_the_files_and_the_inline_image(setup, smtp_server):
    ticket, tom = setup
    ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="",
                         html='<p>The manual, and where to press:</p><p><img src="cid:img1-a1b2.png" alt="button"></p>',
                         files=[ReplyFile("Handbuch Drucker – Größe A4.pdf", "application/pdf", PDF),
                                ReplyFile("img1-a1b2.png", "image/png", PNG, content_id="img1-a1b2.png")])
    commit()  # the sender job runs inline in tests (TIDEMARK_JOBS_SYNC)
    received = smtp_server.last()
    assert received.rcpt_tos == ["alice@contoso.com"]
    mail = received.message
    # multipart/mixed → [multipart/alternative → [text/plain, multipart/related → [text/html, image/png]], pdf]
    assert mail.get_content_type() == "multipart/mixed"
    alternative, pdf = mail.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    assert image["Content-ID"] == "<img1-a1b2.png>" and image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    assert 'src="cid:img1-a1b2.png"' in html.get_content()
    assert pdf.get_filename() == "Handbuch Drucker – Größe A4.pdf" and pdf.get_content() == PDF
    assert "where to press" in plain.get_content() and "cid:" not in plain.get_content()
    sent = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert sent.delivery == "sent" and b"Content-ID: <img1-a1b2.png>" in sent.raw_out  # kept as sent


def test_a_reply_without_files_stays_a_plain_alternative(setup, smtp_server):
    ticket, tom = setup
    ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="Just text.")
    commit()
    mail = smtp_server.last().message
    assert mail.get_content_type() == "multipart/alternative"
    assert list(mail.iter_attachments()) == []


def test_the_files_survive_a_temporary_failure_and_go_out_on_the_retry(setup, smtp_server):
    from portal.outbound.deliver import deliver
    from portal.outbound.servers import send_environment

    ticket, tom = setup
    message = ticket_replies.reply(ticket, tom, to="busy@contoso.com", cc="", text="Log attached.",
                                   files=[ReplyFile("printer.log", "text/plain", b"paper jam\n")])
    commit()
    db.session.refresh(message)
    assert message.delivery == "retrying" and smtp_server.messages == []
    smtp_server.rcpt_replies.pop("busy")
    assert deliver(message, send_environment(), now=utcnow() + timedelta(minutes=2)) == "sent"
    commit()
    (attached,) = list(smtp_server.last().message.iter_attachments())
    assert attached.get_filename() == "printer.log" and attached.get_content() == "paper jam\n"

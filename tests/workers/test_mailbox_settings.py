"""Mailbox settings of issue #17 on real servers: the mailbox's largest message on a real fetch
from Dovecot, and its choice of embedded images on mail that reaches a real SMTP server (aiosmtpd)."""

import base64

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, RawMessage, Ticket, User
from portal.services import commit, ticket_replies
from portal.services.ticket_replies import ReplyFile
from tests.mailfactory import email
from tests.workers import test_fetch
from workers.fetch import fetch_mailbox

acme = test_fetch.acme  # the fixture: Acme MSP and Contoso, Dovecot's CA trusted
make_mailbox = test_fetch.make_mailbox
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_mail_over_the_mailboxs_own_largest_size_is_kept_without_its_bytes(world, acme, dovecot, mail_user,
                                                                           redis, protocol):
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="small", body="short"))
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="large", body="x" * 8000))
    mailbox = make_mailbox(world, acme, dovecot, mail_user, protocol, max_message_size=4096)
    report = fetch_mailbox(mailbox.id)
    assert report["fetched"] == 2 and report["error"] is None
    assert report["outcomes"] == {"created": 1, "unprocessed": 1}
    assert [t.subject for t in db.session.scalars(select(Ticket))] == ["small"]
    large = db.session.scalar(select(RawMessage).where(RawMessage.size > 4096))
    assert large.raw is None and large.size > 8000  # the record stays, its bytes do not
    message = db.session.scalar(select(Message).where(Message.raw_message_id == large.id))
    assert message.outcome == "unprocessed" and "over the size limit" in message.trace[-1]


def test_the_same_mail_fits_under_the_installations_size(world, acme, dovecot, mail_user, redis):
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="large", body="x" * 8000))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)
    assert mailbox.max_message_size is None
    assert fetch_mailbox(mailbox.id)["outcomes"] == {"created": 1}
    assert db.session.scalar(select(RawMessage)).raw is not None


@pytest.fixture
def desk(app, world, smtp_gateway):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    tom = world.user(msp, email="tom@acme.example", role="technician")
    return msp, db.session.get(User, tom.id)


def _reply_with_image(world, msp, tom, **mailbox_values):
    box = world.mailbox(msp, acknowledge=False, **mailbox_values)
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="",
                         html='<p>Press here:</p><p><img src="cid:btn-1.png" alt="button"></p>',
                         files=[ReplyFile("btn-1.png", "image/png", PNG, content_id="btn-1.png")])
    commit()  # the sender job runs inline in tests


def _html_part(mail):
    return next(p for p in mail.walk() if p.get_content_type() == "text/html").get_content()


def test_a_mailbox_that_embeds_images_sends_them_inside_the_html(world, desk, smtp_server):
    msp, tom = desk
    _reply_with_image(world, msp, tom, embed_images="inline")
    mail = smtp_server.last().message
    assert [p.get_content_type() for p in mail.walk() if p.get_content_maintype() == "image"] == []
    html = _html_part(mail)
    assert "cid:" not in html
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in html


def test_by_default_images_travel_as_cid_parts(world, desk, smtp_server):
    msp, tom = desk
    _reply_with_image(world, msp, tom)
    mail = smtp_server.last().message
    (image,) = [p for p in mail.walk() if p.get_content_maintype() == "image"]
    assert image["Content-ID"] == "<btn-1.png>" and image.get_content() == PNG
    assert 'src="cid:btn-1.png"' in _html_part(mail)

"""The From a reply goes out with, chosen among its mailbox's addresses, and the mailbox's
Reply-To on every mail it sends (issue #17, item 4), against a real SMTP server (aiosmtpd)."""

from datetime import timedelta

import pytest

from portal.extensions import db
from portal.models import Mailbox, User
from portal.models.base import utcnow
from portal.services import ValidationError, commit, ticket_replies
from tests.mailfactory import email


@pytest.fixture
def setup(app, world, smtp_gateway):
    app.config["TIDEMARK_MAIL_HOST"] = "tidemark.test"
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, response_address="help@acme.example", aliases=["desk@acme.example"],
                        reply_to="answers@acme.example")
    tom = world.user(msp, email="tom@acme.example", role="technician")
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    return ticket, db.session.get(User, tom.id), box


def test_the_mailbox_offers_its_addresses_the_default_first(setup):
    ticket, _tom, box = setup
    assert ticket_replies.from_choices(ticket) == ["help@acme.example", "support@acme.example", "desk@acme.example"]
    box.response_address = None
    assert box.from_addresses == ["support@acme.example", "desk@acme.example"]


def test_the_acknowledgement_goes_from_the_default_with_the_reply_to(setup, smtp_server):
    ack = smtp_server.last().message  # sent when the ticket was created
    assert ack["From"].addresses[0].addr_spec == "help@acme.example"
    assert [a.addr_spec for a in ack["Reply-To"].addresses] == ["answers@acme.example"]


def test_a_reply_goes_from_the_chosen_alias_with_the_reply_to(setup, smtp_server):
    ticket, tom, _box = setup
    message = ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="On its way.",
                                   from_address="DESK@acme.example")
    commit()
    sent = smtp_server.last().message
    assert sent["From"].addresses[0].addr_spec == "desk@acme.example"  # as the mailbox spells it
    assert sent["Reply-To"].addresses[0].addr_spec == "answers@acme.example"
    db.session.refresh(message)
    assert message.delivery == "sent" and message.from_address == "desk@acme.example"


def test_without_a_choice_a_reply_goes_from_the_default(setup, smtp_server):
    ticket, tom, _box = setup
    ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="Hello.")
    commit()
    assert smtp_server.last().message["From"].addresses[0].addr_spec == "help@acme.example"


def test_an_address_that_is_not_the_mailboxs_is_refused(setup, smtp_server):
    ticket, tom, _box = setup
    before = len(smtp_server.messages)
    with pytest.raises(ValidationError) as refused:
        ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="Hi.", from_address="ceo@acme.example")
    assert refused.value.errors["from_address"] == [
        "ceo@acme.example is not an address of this ticket's mailbox; reply from help@acme.example, "
        "support@acme.example, desk@acme.example."]
    db.session.rollback()
    assert len(smtp_server.messages) == before


def test_a_retry_sends_the_same_from_after_the_mailbox_changed(setup, smtp_server):
    from portal.outbound.deliver import deliver
    from portal.outbound.servers import send_environment

    ticket, tom, box = setup
    message = ticket_replies.reply(ticket, tom, to="busy@contoso.com", cc="", text="Later.",
                                   from_address="desk@acme.example")
    commit()
    db.session.refresh(message)
    assert message.delivery == "retrying"
    mailbox = db.session.get(Mailbox, box.id)
    mailbox.aliases, mailbox.response_address = [], None
    commit()
    smtp_server.rcpt_replies.pop("busy")
    assert deliver(message, send_environment(), now=utcnow() + timedelta(minutes=2)) == "sent"
    commit()
    assert smtp_server.last().message["From"].addresses[0].addr_spec == "desk@acme.example"


def test_a_mailbox_without_a_reply_to_sends_none(setup, smtp_server):
    ticket, tom, box = setup
    db.session.get(Mailbox, box.id).reply_to = None
    commit()
    ticket_replies.reply(ticket, tom, to="alice@contoso.com", cc="", text="Hi.")
    commit()
    assert smtp_server.last().message["Reply-To"] is None

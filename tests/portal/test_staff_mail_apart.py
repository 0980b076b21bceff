"""The ticket page shows the staff's mail (the alert to the on-call address and answers to it)
apart from the customer's conversation, folded: the alert quotes the customer's whole mail."""

import re

import pytest

from portal.models import Message
from portal.services import tickets as svc
from tests.mailfactory import email


@pytest.fixture
def alerted(world, acme, smtp_gateway):
    acme.box.alert_recipients = ["noc@acme.example"]
    world.app.extensions["sqlalchemy"].session.commit()
    result = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer",
                                           body="The printer on floor 3 prints only blank pages."))
    return acme, result.ticket


def sections(page: str) -> tuple[str, str]:
    conversation = re.search(r'<ol class="conversation" id="ticket-conversation".*?</ol>', page, re.S).group(0)
    staff = re.search(r'<section class="card staff-mail" id="ticket-staff".*?</section>', page, re.S).group(0)
    return conversation, staff


def test_the_alert_is_apart_from_the_customers_conversation(tech, alerted):
    _acme, ticket = alerted
    conversation, staff = sections(tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True))
    assert "alice@contoso.com" in conversation and "noc@acme.example" not in conversation
    assert conversation.count('class="msg msg-') == 1  # the customer's mail only
    assert "Staff notifications (1)" in staff and "alert to noc@acme.example" in staff
    assert "<details class=\"staff-msg\">" in staff  # folded: it repeats the customer's mail


def test_an_engineers_answer_to_the_alert_is_staff_mail_too(world, tech, alerted):
    acme, ticket = alerted
    alert = next(m for m in svc.conversation(ticket) if m.details.get("event") == "alert")
    assert alert.message_id  # sent, so it can be answered
    world.deliver(acme.box, email(sender="noc@acme.example", subject=f"Re: [{ticket.reference}] Printer",
                                  in_reply_to=alert.message_id, body="On it, from the NOC."))
    messages = svc.conversation(ticket)
    staff = svc.staff_mail(messages)
    answer = next(m for m in messages if m.direction == "in" and m.from_address == "noc@acme.example")
    assert staff == {alert.id, answer.id}
    conversation, section = sections(tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True))
    assert "On it, from the NOC." not in conversation and "On it, from the NOC." in section


def test_a_ticket_without_staff_mail_shows_no_empty_section(world, tech, acme):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Quiet")).ticket
    _conversation, staff = sections(tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True))
    assert re.match(r'<section[^>]*\bhidden>', staff)


def test_mail_not_sent_yet_goes_where_its_event_says():
    def queued(id_, event):  # no Message-ID before it is sent
        return Message(id=id_, direction="out", message_id=None, details={"event": event})

    note = Message(id=3, direction="note", message_id=None, details={})
    assert svc.staff_mail([queued(1, "alert"), queued(2, "reply"), note]) == {1}

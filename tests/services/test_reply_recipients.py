"""A reply goes to at most MAX_RECIPIENTS addresses: a mail naming thousands (a mail bomb's
10,000 recipients) does not become a technician's default Cc, and a reply naming more is refused
with the field and the count."""

import re

import pytest

from portal.services import ValidationError, commit
from portal.services.ticket_replies import MAX_RECIPIENTS, reply, reply_defaults
from tests.mailfactory import email


@pytest.fixture
def crowd(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False, address="help@acme.example")
    tom = world.user(msp, email="tom@acme.example", role="technician")
    addresses = [f"person{n}@contoso.com" for n in range(250)]
    ticket = world.deliver(box, email(sender="alice@contoso.com", to=["help@acme.example"], cc=addresses,
                                      subject="Everyone")).ticket
    commit()
    return ticket, tom, addresses


def test_the_default_cc_keeps_to_the_limit_and_says_how_many_were_left_out(crowd, browser):
    ticket, _tom, addresses = crowd
    to, cc, left_out = reply_defaults(ticket)
    assert to == ["alice@contoso.com"] and cc == addresses[:MAX_RECIPIENTS - 1]
    assert left_out == 250 - (MAX_RECIPIENTS - 1)
    browser.sign_in("tom@acme.example")
    page = browser.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert f"The last mail named {left_out:,} more addresses, left out here" in page
    field = re.search(r'<input[^>]*id="reply-cc"[^>]*>', page).group()
    shown = re.search(r'value="([^"]*)"', field).group(1).split(", ")
    assert shown == addresses[:MAX_RECIPIENTS - 1]


def test_a_reply_to_more_addresses_is_refused_naming_the_field_and_the_count(crowd):
    ticket, tom, addresses = crowd
    with pytest.raises(ValidationError) as refused:
        reply(ticket, tom, to="alice@contoso.com", cc=", ".join(addresses[:MAX_RECIPIENTS]), text="Hello all")
    assert refused.value.errors == {"cc": [f"A reply goes to at most {MAX_RECIPIENTS} addresses, To and Cc together; "
                                           f"this one names {MAX_RECIPIENTS + 1}."]}
    message = reply(ticket, tom, to="alice@contoso.com", cc=", ".join(addresses[:MAX_RECIPIENTS - 1]), text="Hello")
    assert len(message.to) + len(message.cc) == MAX_RECIPIENTS

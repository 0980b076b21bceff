"""A mailbox that accepts mail only from allowed senders (issue #17, DESIGN step 5 after the
ignore list): a sender that no allow-list in the MSP's tree and no contact knows is recorded as
ignored, creates nothing and is acknowledged nothing."""

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.decide import SENDER_NOT_ALLOWED
from portal.models import Contact, Message, Ticket
from portal.services import commit
from tests.mailfactory import email


@pytest.fixture
def tree(world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com", "boss@gmail.com"])
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.example"])
    other = world.msp("Other MSP")
    world.client(other, "Northwind", allow=["northwind.example"])
    # Fabrikam's own mailbox, acknowledging: the MSP's whole tree counts, not only Fabrikam's lists.
    box = world.mailbox(fabrikam, address="help@fabrikam-desk.example", accept_only_allowed=True, acknowledge=True)
    return msp, contoso, fabrikam, box


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_stranger_is_recorded_as_ignored_and_gets_nothing(world, tree):
    *_, box = tree
    result = world.deliver(box, email(sender="eve@stranger.example", to=["help@fabrikam-desk.example"]))
    assert result.outcome == "ignored" and result.ticket is None
    assert any(SENDER_NOT_ALLOWED in line and "eve@stranger.example" in line for line in result.trace)
    assert result.message.raw_message.raw is not None  # kept
    assert count(Ticket) == 0 and count(Contact) == 0
    assert count(Message, Message.direction == "out") == 0  # no acknowledgement


def test_another_msps_allow_list_does_not_count(world, tree):
    *_, box = tree
    result = world.deliver(box, email(sender="ann@northwind.example", to=["help@fabrikam-desk.example"]))
    assert result.outcome == "ignored" and count(Ticket) == 0


@pytest.mark.parametrize("sender", ["alice@contoso.com", "boss@gmail.com", "bob@it.fabrikam.example"])
def test_a_sender_on_any_allow_list_of_the_tree_is_accepted(world, tree, sender):
    *_, box = tree
    result = world.deliver(box, email(sender=sender, to=["help@fabrikam-desk.example"]))
    assert result.outcome == "created"
    assert any(line.startswith(f"allowed sender: {sender} is on an allow-list") for line in result.trace)
    assert count(Message, Message.direction == "out") == 1  # acknowledged as usual


def test_a_known_contact_is_accepted(world, tree):
    msp, contoso, _fabrikam, box = tree
    db.session.add(Contact(msp_id=msp.id, client_id=contoso.id, email="pat@freemail.example", name="Pat"))
    commit()
    result = world.deliver(box, email(sender="pat@freemail.example", to=["help@fabrikam-desk.example"]))
    assert result.outcome == "created"
    assert "allowed sender: pat@freemail.example is a known contact" in result.trace


def test_a_stranger_cannot_write_into_a_ticket_either(world, tree):
    *_, box = tree
    ticket = world.deliver(box, email(sender="alice@contoso.com", to=["help@fabrikam-desk.example"],
                                      message_id="<first@contoso.com>")).ticket
    reply = world.deliver(box, email(sender="eve@stranger.example", to=["help@fabrikam-desk.example"],
                                     subject=f"Re: [{ticket.reference}] Printer on fire",
                                     in_reply_to="<first@contoso.com>"))
    assert reply.outcome == "ignored" and reply.ticket is None
    assert count(Message, Message.ticket_id == ticket.id, Message.direction == "in") == 1


def test_without_the_setting_a_stranger_opens_a_ticket(world, tree):
    _msp, _contoso, fabrikam, _box = tree
    open_box = world.mailbox(fabrikam, address="open@fabrikam-desk.example")
    result = world.deliver(open_box, email(sender="eve@stranger.example", to=["open@fabrikam-desk.example"]))
    assert result.outcome == "created" and result.ticket.client_id == fabrikam.id
    assert not any(SENDER_NOT_ALLOWED in line for line in result.trace)

"""Notifications to the customer (the ticket's contact) when their ticket changes, as the mail
settings choose; each through the outbox to a real SMTP server (aiosmtpd)."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, User
from portal.services import ValidationError, commit
from portal.outbound.settings import get_setting, save_mail_settings
from portal.services import tickets as ticket_svc
from tests.mailfactory import email
from workers.sending import send_due


@pytest.fixture
def desk(app, world, smtp_gateway):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    ana = db.session.get(User, world.user(msp, "ana@acme.example").id)
    ana.name = "Ana Admin"
    tom = db.session.get(User, world.user(msp, "tom@acme.example", role="technician").id)
    ticket = world.deliver(box, email(sender="Alice <alice@contoso.com>", message_id="<c1@contoso.com>",
                                      body="The printer is on fire.")).ticket
    commit()
    return ticket, ana, tom, box


def outbox(event):
    return [m for m in db.session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
            if m.details["event"] == event]


def test_the_customer_hears_their_ticket_closed_in_the_same_thread(desk, smtp_server):
    ticket, ana, _tom, _box = desk
    ticket_svc.change_status(ticket, "closed", ana)
    commit()
    send_due()
    got = smtp_server.last()
    assert got.rcpt_tos == ["alice@contoso.com"] and got.message["Auto-Submitted"] == "auto-generated"
    assert got.message["In-Reply-To"] == "<c1@contoso.com>" and ticket.reference in got.message["Subject"]
    assert "closed" in got.message.get_body(("plain",)).get_content()


def test_a_technician_reopening_tells_the_customer_but_a_status_step_does_not(desk):
    ticket, ana, _tom, _box = desk
    ticket_svc.change_status(ticket, "open", ana)
    ticket_svc.change_status(ticket, "resolved", ana)
    assert outbox("reopened") == [] and outbox("closed") == []
    ticket_svc.change_status(ticket, "open", ana)
    commit()
    assert [m.to[0]["address"] for m in outbox("reopened")] == ["alice@contoso.com"]


def test_owner_and_priority_changes_are_off_by_default_and_on_when_chosen(app, desk, smtp_server):
    ticket, ana, tom, _box = desk
    ticket_svc.change_assignee(ticket, tom, ana)
    ticket_svc.change_priority(ticket, "high", ana)
    assert outbox("owner_changed") == [] and outbox("priority_changed") == []
    with pytest.raises(ValidationError, match="Unknown: bogus"):  # named, not dropped in silence
        save_mail_settings({"auto_mail_limit_per_hour": 10, "customer_notifications":
                            ["owner_changed", "priority_changed", "bogus"]},
                           keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=ana)
    assert get_setting("customer_notifications") != ["owner_changed", "priority_changed"]
    save_mail_settings({"auto_mail_limit_per_hour": 10, "customer_notifications":
                        ["owner_changed", "priority_changed"]},
                       keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=ana)
    assert get_setting("customer_notifications") == ["owner_changed", "priority_changed"]
    ticket_svc.change_assignee(ticket, ana, ana)
    ticket_svc.change_priority(ticket, "low", ana)
    commit()
    send_due()
    texts = [m.message.get_body(("plain",)).get_content() for m in smtp_server.messages]
    assert any("Ana Admin is now looking after" in t for t in texts)
    assert any("priority of ticket" in t and "low" in t for t in texts), texts


def test_a_customer_reply_that_reopens_the_ticket_is_answered_once(world, desk, smtp_server):
    ticket, ana, _tom, box = desk
    ticket_svc.change_status(ticket, "resolved", ana)
    commit()
    result = world.deliver(box, email(sender="alice@contoso.com", in_reply_to="<c1@contoso.com>",
                                      subject="Re: Printer on fire", body="It is burning again."))
    assert result.outcome == "reopened" and "the customer hears that the ticket is reopened" in result.trace
    ooo = world.deliver(box, email(sender="alice@contoso.com", in_reply_to="<c1@contoso.com>", subject="Out of office",
                                   headers={"Auto-Submitted": "auto-replied"}))
    assert "the customer hears" not in " ".join(ooo.trace)
    send_due()
    assert [m.rcpt_tos for m in smtp_server.messages] == [["alice@contoso.com"]]


def test_closing_right_after_the_acknowledgement_is_not_taken_for_a_loop(world, desk, smtp_server):
    _ticket, ana, _tom, _box = desk
    acked = world.mailbox(ana.msp, address="help@acme.example",
                          acknowledge=True)
    ticket = world.deliver(acked, email(sender="bob@contoso.com", to=["help@acme.example"], subject="Mouse broken")).ticket
    send_due()
    ticket_svc.change_status(ticket, "closed", ana)
    commit()
    send_due()
    events = [m.details["event"] for m in outbox("ticket_created") + outbox("closed") if "bob" in m.to[0]["address"]]
    assert sorted(events) == ["closed", "ticket_created"]
    assert [m.rcpt_tos for m in smtp_server.messages].count(["bob@contoso.com"]) == 2

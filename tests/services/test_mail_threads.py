"""Mail we send threads on its own conversation: the customer's mail client groups our answers
with their mail and never sees an alert's Message-ID; alerts to the on-call engineers keep to
themselves. End to end: jobs run inline, as the command line runs them, to a real SMTP server."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, User
from portal.services import commit, ticket_replies
from portal.services import tickets as ticket_svc
from tests.mailfactory import email

ONCALL = "oncall@acme.example"


@pytest.fixture
def desk(app, world, smtp_gateway):
    assert app.config["TIDEMARK_JOBS_SYNC"]
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, alert_recipients=[ONCALL])
    tom = world.user(msp, "tom@acme.example", role="technician")
    commit()
    return box, tom


def received(smtp_server, to):
    return [m.message for m in smtp_server.messages if m.rcpt_tos == [to]]


def references(mail) -> list[str]:
    return (mail["References"] or "").split()


def test_customer_mail_threads_on_the_customers_conversation_never_on_the_alert(world, desk, smtp_server):
    box, tom = desk
    first = world.deliver(box, email(sender="alice@contoso.com", message_id="<c1@contoso.com>",
                                     references=["<r0@contoso.com>"]))
    ticket = first.ticket
    (ack,), (alert,) = received(smtp_server, "alice@contoso.com"), received(smtp_server, ONCALL)
    alert_id = alert["Message-ID"]
    assert ack["In-Reply-To"] == "<c1@contoso.com>" and references(ack) == ["<r0@contoso.com>", "<c1@contoso.com>"]
    assert alert["In-Reply-To"] is None and alert["References"] is None  # the first alert starts its own thread

    # The on-call engineer answers the alert by mail: it lands on the ticket, in the staff's thread.
    staff = world.deliver(box, email(sender=ONCALL, subject="Re: " + alert["Subject"], message_id="<s1@acme.example>",
                                     in_reply_to=alert_id, references=[alert_id]))
    assert staff.ticket.id == ticket.id

    ticket_replies.reply(ticket, db.session.get(User, tom.id), to="alice@contoso.com", cc="", text="On my way.")
    commit()
    reply = received(smtp_server, "alice@contoso.com")[-1]
    assert reply["In-Reply-To"] == "<c1@contoso.com>"
    assert references(reply) == ["<r0@contoso.com>", "<c1@contoso.com>"]

    # The customer answers our reply; the notification that the ticket is closed answers that.
    answer = world.deliver(box, email(sender="alice@contoso.com", subject="Re: " + reply["Subject"],
                                      message_id="<c2@contoso.com>", in_reply_to=reply["Message-ID"],
                                      references=[*references(reply), reply["Message-ID"]]))
    assert answer.ticket.id == ticket.id
    ticket_svc.change_status(ticket, "closed", db.session.get(User, tom.id))
    commit()
    closed = received(smtp_server, "alice@contoso.com")[-1]
    assert "closed" in closed.get_body(("plain",)).get_content()
    assert closed["In-Reply-To"] == "<c2@contoso.com>"
    assert references(closed) == ["<r0@contoso.com>", "<c1@contoso.com>", reply["Message-ID"], "<c2@contoso.com>"]

    for mail in received(smtp_server, "alice@contoso.com"):
        assert alert_id not in (mail["In-Reply-To"] or "") and alert_id not in references(mail)
        assert "<s1@acme.example>" not in references(mail)


def test_notifications_to_the_customer_answer_their_mail_not_the_alert_sent_after_it(world, desk, smtp_server):
    box, tom = desk
    ticket = world.deliver(box, email(sender="alice@contoso.com", message_id="<c1@contoso.com>")).ticket
    (alert,) = received(smtp_server, ONCALL)  # sent after the acknowledgement: the newest mail on the ticket
    tom = db.session.get(User, tom.id)
    ticket_svc.change_status(ticket, "closed", tom)
    commit()
    ticket_svc.change_status(ticket, "open", tom)
    commit()
    ack, closed, reopened = received(smtp_server, "alice@contoso.com")
    sent = db.session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)).all()
    assert [(m.details["event"], m.delivery) for m in sent] == [
        ("ticket_created", "sent"), ("alert", "sent"), ("closed", "sent"), ("reopened", "sent")]
    for mail in (ack, closed, reopened):
        assert mail["In-Reply-To"] == "<c1@contoso.com>" and references(mail) == ["<c1@contoso.com>"]
        assert alert["Message-ID"] not in (mail["References"] or "")


def test_the_notification_that_mail_reopened_the_ticket_answers_that_mail(world, desk, smtp_server):
    box, _tom = desk
    ticket = world.deliver(box, email(sender="alice@contoso.com", message_id="<c1@contoso.com>")).ticket
    (alert,) = received(smtp_server, ONCALL)
    ticket.status = "resolved"
    commit()
    again = world.deliver(box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer on fire",
                                     message_id="<c2@contoso.com>", in_reply_to="<c1@contoso.com>",
                                     references=["<c1@contoso.com>"]))
    assert again.outcome == "reopened" and again.ticket.id == ticket.id
    # Held back by the loop guard (an automatic mail on this subject went out within the hour),
    # but threaded as it would go out.
    notice = db.session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)).all()[-1]
    assert notice.details["event"] == "reopened"
    assert (notice.in_reply_to, notice.references) == ("<c2@contoso.com>", ["<c1@contoso.com>", "<c2@contoso.com>"])
    assert alert["Message-ID"] not in notice.references

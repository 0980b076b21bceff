"""An auto-reply (out-of-office) that threads to no ticket is recorded, not made
into work: no ticket, no alert, a line in the mailbox's history and a waiting unprocessed email
with its reason. The mailbox's `automatic_mail` setting brings back tickets for it. Mail we send
goes inline to a real SMTP server, so an alert that went out would be seen there."""

import textwrap

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound import unprocessed as svc
from portal.models import AuditEntry, Mailbox, Message, Ticket
from portal.services import audit, commit
from tests.mailfactory import email

ONCALL = "oncall@acme.example"
OOO = {"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"}


@pytest.fixture
def desk(app, world, smtp_gateway):
    assert app.config["TIDEMARK_JOBS_SYNC"]
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, alert_recipients=[ONCALL])
    return msp, box


def out_of_office(**kw):
    return email(sender="alice@contoso.com", subject="Automatic reply: Printer on fire",
                 body="I am out of the office until Monday.", headers=OOO, **kw)


def sent_to(smtp_server, address):
    return [m for m in smtp_server.messages if address in m.rcpt_tos]


def tickets():
    return db.session.scalar(select(func.count()).select_from(Ticket))


def test_an_out_of_office_answering_no_ticket_is_recorded_with_no_ticket_and_no_alert(world, desk, smtp_server):
    msp, box = desk
    assert box.automatic_mail == "record"  # the default
    result = world.deliver(box, out_of_office())
    assert result.outcome == "unprocessed" and result.ticket is None and tickets() == 0
    assert result.trace[-1] == "unprocessed: automatic mail, no ticket"
    assert result.message.raw_message.state == "decided"
    assert smtp_server.messages == []  # neither an alert nor an acknowledgement

    rows, total = svc.list_mail(msp.id)
    assert total == 1 and rows[0].why == "unprocessed: automatic mail, no ticket"
    history, _ = audit.history(msp.id, "mailbox", box.id)
    entry = history[0]
    assert (entry.action, entry.actor_label) == ("recorded automatic mail", "inbound mail")
    assert entry.changes == {"automatic mail, no ticket": [None, "alice@contoso.com: Automatic reply: Printer on fire"]}

    # The pipe works: ordinary mail from the same sender opens a ticket and alerts.
    ordinary = world.deliver(box, email(sender="alice@contoso.com"))
    assert ordinary.outcome == "created"
    assert len(sent_to(smtp_server, ONCALL)) == 1 and len(sent_to(smtp_server, "alice@contoso.com")) == 1


def test_deciding_it_again_keeps_it_waiting_and_adds_no_second_history_line(app, world, desk):
    from portal.inbound.replay import Pipeline

    msp, box = desk
    result = world.deliver(box, out_of_office())
    outcome = svc.rerun(result.message, None, Pipeline(secret=app.config["SECRET_KEY"].encode()))
    commit()
    assert outcome.result.outcome == "unprocessed" and tickets() == 0
    recorded = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "recorded automatic mail")).all()
    assert len(recorded) == 1


def test_with_the_setting_on_tickets_an_out_of_office_opens_one_and_alerts_as_before(world, desk, smtp_server):
    msp, box = desk
    box.automatic_mail = "ticket"
    commit()
    result = world.deliver(box, out_of_office())
    assert result.outcome == "created" and result.ticket.subject == "Automatic reply: Printer on fire"
    (alert,) = sent_to(smtp_server, ONCALL)
    assert sent_to(smtp_server, "alice@contoso.com") == []  # automatic mail is never acknowledged
    assert svc.count_waiting(msp.id) == 0
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "recorded automatic mail")) is None


@pytest.mark.parametrize("headers", [{"Auto-Submitted": "auto-generated"}, {"Precedence": "bulk"}],
                         ids=["monitoring", "bulk"])
def test_other_automatic_mail_answering_no_ticket_still_opens_one(world, desk, smtp_server, headers):
    """Monitoring alerts and list mail are automatic too, but they are work: only auto-replies wait."""
    msp, box = desk
    result = world.deliver(box, email(sender="nagios@contoso.com", subject="PROBLEM: disk full on srv1",
                                      body="Disk / is 98% full.", headers=headers))
    assert result.outcome == "created" and result.ticket.subject == "PROBLEM: disk full on srv1"
    assert svc.count_waiting(msp.id) == 0
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "recorded automatic mail")) is None


@pytest.mark.parametrize("setting", ["record", "ticket"])
def test_an_out_of_office_answering_a_ticket_goes_onto_it_whatever_the_setting(world, desk, smtp_server, setting):
    msp, box = desk
    box.automatic_mail = setting
    commit()
    first = world.deliver(box, email(sender="alice@contoso.com", message_id="<c1@contoso.com>"))
    ticket = first.ticket
    ack = db.session.scalar(select(Message).where(Message.direction == "out", Message.ticket_id == ticket.id,
                                                  Message.details["event"].as_string() == "ticket_created"))
    # A technician's reply (not automatic) the customer's out-of-office answers.
    db.session.add(Message(msp_id=msp.id, mailbox_id=box.id, ticket_id=ticket.id, direction="out",
                           message_id="<reply.1@acme.example>"))
    ticket.status, ticket.new_information = "waiting", False
    commit()
    smtp_server.messages.clear()

    to_reply = world.deliver(box, out_of_office(in_reply_to="<reply.1@acme.example>"))
    assert to_reply.outcome == "appended" and to_reply.ticket.id == ticket.id
    db.session.refresh(ticket)
    assert ticket.status == "open"  # as today: an answer to a person's reply is an answer

    ticket.status, ticket.new_information = "waiting", False
    commit()
    to_ack = world.deliver(box, out_of_office(in_reply_to=ack.message_id))
    assert to_ack.outcome == "appended" and to_ack.ticket.id == ticket.id
    db.session.refresh(ticket)
    assert ticket.status == "waiting" and ticket.new_information is False  # an answer to our automatic mail
    assert tickets() == 1 and svc.count_waiting(msp.id) == 0 and smtp_server.messages == []


def test_the_setting_is_a_mailbox_form_field_and_a_configuration_key(app, world, db, tmp_path):
    msp = world.msp("Demo MSP")
    path = tmp_path / "tidemark.yaml"
    path.write_text(textwrap.dedent("""
        mailboxes:
          - {address: support@demo.example, client: Demo MSP, host: 127.0.0.1, username: s, automatic_mail: ticket,
             routes: [{name: All, fallback: true, client: Demo MSP}]}
    """))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["config", "import", str(path)])
    assert result.exit_code == 0, result.output
    box = db.session.scalar(select(Mailbox))
    assert box.automatic_mail == "ticket"
    assert "automatic_mail: ticket" in runner.invoke(args=["config", "export"]).output
    path.write_text(path.read_text().replace("automatic_mail: ticket", "automatic_mail: sometimes"))
    refused = runner.invoke(args=["config", "import", str(path)])
    assert refused.exit_code != 0 and "automatic_mail" in refused.output and "record, ticket" in refused.output
    assert msp is not None


def test_an_auto_reply_loop_leaves_one_history_line_per_sender_and_day(world, desk):
    """Each auto-reply still waits among the unprocessed mail, but the mailbox's history keeps one
    line per sender a day and counts the rest on it."""
    msp, box = desk
    for _ in range(4):
        assert world.deliver(box, out_of_office()).outcome == "unprocessed"
    world.deliver(box, email(sender="bob@contoso.com", subject="Automatic reply: VPN", headers=OOO))
    assert svc.count_waiting(msp.id) == 5
    recorded = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "recorded automatic mail")
                                  .order_by(AuditEntry.id)).all()
    assert [e.changes for e in recorded] == [
        {"automatic mail, no ticket": [None, "alice@contoso.com: Automatic reply: Printer on fire"],
         "more from this sender that day": [None, 3]},
        {"automatic mail, no ticket": [None, "bob@contoso.com: Automatic reply: VPN"]}]

"""Extraction rules on mail fetched by the worker from a real Dovecot: a batch of new tickets is
written in a few statements (portal.inbound.write), and the values the rules took go in with it."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, Ticket, TicketFieldValue
from portal.services import commit
from portal.services import custom_fields as cf
from tests.mailfactory import email
from workers.fetch import fetch_mailbox


def test_fetched_mail_fills_fields_and_priority_in_one_batch(world, app, dovecot, mail_user, redis):
    app.config["TIDEMARK_CA_FILE"] = str(dovecot.ca_file)
    msp = world.msp("Acme MSP")
    cf.save_field(msp, cf.FieldInput("Customer ID", "number"), actor=None)
    commit()
    rules = [{"source": "header:X-Customer-Id", "pattern": r"(?P<id>\S+)", "target": "field:Customer ID"},
             {"source": "subject", "pattern": r"^\[(?P<p>\w+)\]", "target": "priority"}]
    box = world.mailbox(msp, address="support@acme.example", status="active", host="127.0.0.1",
                        port=dovecot.port("imap", "none"), security="none", username=mail_user.name,
                        password=mail_user.password, after_action="seen", acknowledge=False,
                        routes=[{"name": "Everything else", "client": msp, "fallback": True,
                                 "extraction_rules": rules}])
    for i in range(3):
        dovecot.deliver(mail_user, email(subject=f"[{'high' if i else 'soon'}] case {i}",
                                         headers={"X-Customer-Id": str(4700 + i) if i != 1 else "n/a"}))
    assert fetch_mailbox(box.id)["error"] is None
    db.session.expire_all()
    tickets = db.session.scalars(select(Ticket).order_by(Ticket.id)).all()
    assert [t.priority for t in tickets] == ["normal", "high", "high"]
    stored = dict(db.session.execute(select(TicketFieldValue.ticket_id, TicketFieldValue.value)).all())
    assert stored == {tickets[0].id: "4700", tickets[2].id: "4702"}
    trace = db.session.scalar(select(Message.trace).where(Message.ticket_id == tickets[1].id))
    assert "extraction: header:X-Customer-Id → field:Customer ID took 'n/a': not applied, not a number" in trace

"""Test emails ("send test email" on a template and on a mailbox) are limited per person and per
MSP, honour the staging switches and are recorded in the audit history (issue #13)."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry
from portal.services import commit
from portal.outbound.servers import save_smtp_server
from portal.outbound.settings import set_setting

TEMPLATE = "Your invoice is overdue\nPay at https://evil.example now.\n"


@pytest.fixture
def setup(app, world, smtp_server, redis):
    msp = world.msp("Acme MSP")
    for name in ("ana", "bob", "cyd", "dan"):
        world.user(msp, email=f"{name}@acme.example")
    box = world.mailbox(msp, address="support@acme.example")
    save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                      "from": "gateway@installation.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    return msp, box


def signed_in(make_browser, name):
    b = make_browser()
    b.sign_in(f"{name}@acme.example")
    return b


def template_test(browser, msp, to="victim@outside.example"):
    return browser.post(f"/clients/{msp.id}/emails/ticket_created/test",
                        {"text_source": TEMPLATE, "html_source": "", "recipient": to}).get_data(as_text=True)


def mailbox_test(browser, box, to="victim@outside.example"):
    return browser.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": to}, htmx=True).get_data(as_text=True)


def test_the_fourth_test_email_in_a_minute_is_refused(make_browser, setup, smtp_server):
    msp, box = setup
    ana = signed_in(make_browser, "ana")
    answers = [template_test(ana, msp), mailbox_test(ana, box), template_test(ana, msp), template_test(ana, msp)]
    assert all("Sent to victim@outside.example" in a for a in answers[:3]), answers
    assert "Not sent: you have sent 3 test emails in the last minute" in answers[3], answers[3]
    assert len(smtp_server.messages) == 3


def test_the_eleventh_test_email_in_an_hour_for_the_msp_is_refused(make_browser, setup, smtp_server):
    msp, box = setup
    people = [signed_in(make_browser, n) for n in ("ana", "bob", "cyd", "dan")]
    answers = []
    for person in people:
        answers += [template_test(person, msp), mailbox_test(person, box), template_test(person, msp)]
    assert all(a.startswith("<") and "Sent to" in a for a in answers[:10]), answers
    assert "Not sent: your MSP has sent 10 test emails in the last hour" in answers[10], answers[10]
    assert "Not sent" in answers[11]
    assert len(smtp_server.messages) == 10


def test_block_outgoing_sends_nothing_and_says_why(make_browser, setup, smtp_server):
    msp, box = setup
    set_setting("block_outgoing", True)
    commit()
    ana = signed_in(make_browser, "ana")
    for answer in (template_test(ana, msp), mailbox_test(ana, box)):
        assert "Not sent: outgoing mail is switched off" in answer, answer
    assert smtp_server.messages == []


def test_override_recipient_receives_the_test_email_instead(make_browser, setup, smtp_server):
    msp, box = setup
    set_setting("override_recipient", "staging@acme.example")
    commit()
    ana = signed_in(make_browser, "ana")
    for answer in (template_test(ana, msp), mailbox_test(ana, box)):
        assert "Sent to staging@acme.example instead of victim@outside.example" in answer, answer
    assert [m.rcpt_tos for m in smtp_server.messages] == [["staging@acme.example"]] * 2
    assert all(m.message["To"] == "staging@acme.example" for m in smtp_server.messages)


def test_every_test_email_is_in_the_audit_history(make_browser, setup, smtp_server):
    msp, box = setup
    ana = signed_in(make_browser, "ana")
    template_test(ana, msp)
    mailbox_test(ana, box)
    for _ in range(2):
        template_test(ana, msp)
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action.like("test email%"))
                                 .order_by(AuditEntry.id)).all()
    assert [(e.record_type, e.record_id, e.action, e.actor_label) for e in entries] == [
        ("client", msp.id, "test email sent", "ana@acme.example"),
        ("mailbox", box.id, "test email sent", "ana@acme.example"),
        ("client", msp.id, "test email sent", "ana@acme.example"),
        ("client", msp.id, "test email not sent", "ana@acme.example"),
    ]
    assert entries[0].changes["recipient"] == [None, "victim@outside.example"]
    assert "in the last minute" in entries[3].changes["result"][1]

"""Mail that failed, or may not have arrived (a sending run died while its server was taking it),
can be sent again from its ticket, at a person's word, once."""

from sqlalchemy import select

from portal.models import AuditEntry, Message
from portal.outbound.deliver import handed_over, settle_interrupted
from portal.services import commit
from tests.mailfactory import email
from tests.workers.test_outbound import outbox, setup  # noqa: F401 - the fixture
from workers.sending import send_due


def uncertain_acknowledgement(world, box):
    """An acknowledgement as a run killed after the server's 250 leaves it, settled by the next run."""
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire")).ticket
    (ack,) = outbox("ticket_created")
    handed_over(ack)
    commit()
    assert [m.id for m in settle_interrupted()] == [ack.id]
    commit()
    return ticket, ack


def test_a_mail_that_may_not_have_arrived_is_shown_so_and_sent_again_once_when_asked(world, setup, smtp_server, browser, db):
    msp, _contoso, box = setup
    world.user(msp, email="tom@acme.example", role="technician")
    ticket, ack = uncertain_acknowledgement(world, box)
    assert send_due() == {} and smtp_server.messages == []  # never sent again by itself
    browser.sign_in("tom@acme.example")
    page = browser.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "may have been sent: the sending run stopped while the server was taking it" in page
    assert "This mail may have arrived already: send it again anyway?" in page
    here = f"/tickets/{ticket.reference}/messages/{ack.id}/send-again"

    asked = browser.post(here, confirmed=False)
    assert asked.status_code == 200 and "Send this mail again?" in asked.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Message, ack.id).delivery == "uncertain"

    assert browser.post(here).status_code == 303
    db.session.expire_all()
    again = db.session.get(Message, ack.id)
    assert (again.delivery, again.delivery_note) == ("queued", "queued again by tom@acme.example")
    assert db.session.scalar(select(AuditEntry.action).where(AuditEntry.record_id == ticket.id,
                                                             AuditEntry.action == "send again"))
    # The same-subject loop guard would hold back an automatic mail sent within the hour; a
    # person's word passes it. The same Message-ID goes out.
    assert send_due() == {"sent": 1}
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [ack.message_id]
    assert send_due() == {} and len(smtp_server.messages) == 1


def test_only_failed_or_uncertain_mail_can_be_sent_again(world, setup, smtp_server, browser, db):
    msp, _contoso, box = setup
    world.user(msp, email="tom@acme.example", role="technician")
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer")).ticket
    assert send_due() == {"sent": 1}
    (ack,) = outbox("ticket_created")
    browser.sign_in("tom@acme.example")
    page = browser.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "Send again" not in page
    resp = browser.post(f"/tickets/{ticket.reference}/messages/{ack.id}/send-again")
    assert resp.status_code == 303
    assert "Only mail that failed, or that may not have arrived, can be sent again." in \
        browser.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Message, ack.id).delivery == "sent"
    assert send_due() == {} and len(smtp_server.messages) == 1


def test_the_dashboard_lists_mail_that_did_not_go_out_of_this_msp_only(world, setup, smtp_server, browser,
                                                                        make_browser, db):
    from portal.services import dashboard as board

    msp, _contoso, box = setup
    world.user(msp, email="ana@acme.example", role="admin")
    browser.sign_in("ana@acme.example")
    assert "No outgoing mail failed" in browser.get("/").get_data(as_text=True)

    ticket, ack = uncertain_acknowledgement(world, box)
    scanner = world.deliver(box, email(sender="gone@contoso.com", subject="Scanner")).ticket  # 550 User unknown
    assert send_due() == {"failed": 1}
    failed_page = browser.get(f"/tickets/{scanner.reference}").get_data(as_text=True)
    assert 'hx-confirm="Send this mail again?"' in failed_page  # failed mail can be sent again too
    page = browser.get("/").get_data(as_text=True)
    card = page.split('id="mail-not-sent"', 1)[1].split("</section>", 1)[0]
    assert '<strong id="not-sent-count">2</strong> mails failed or may not have arrived' in card
    assert f'href="/tickets/{ticket.reference}#m{ack.id}"' in card and "may have been sent" in card
    assert "gone@contoso.com" in card and "550" in card
    # The newest first, and only so many of them.
    assert [m.to[0]["address"] for m in board.mail_not_sent(msp.id).newest] == ["gone@contoso.com", "alice@contoso.com"]
    shown = board.mail_not_sent(msp.id, shown=1)
    assert (len(shown.newest), shown.total) == (1, 2)

    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    theirs = eve.get("/").get_data(as_text=True)
    assert "No outgoing mail failed" in theirs and "gone@contoso.com" not in theirs

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox
from tests.mailfactory import email


def test_mailbox_list_shows_health_and_test_connection_answers_in_place(world, browser, dovecot, mail_user, app):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    good = world.mailbox(msp, address="support@acme.example", host="127.0.0.1", port=dovecot.imap_port,
                         security="none", username=mail_user.name, password=mail_user.password)
    bad = world.mailbox(msp, address="old@acme.example", host="127.0.0.1", port=1, security="none")
    bad.failure_count, bad.last_error = 3, "could not connect to 127.0.0.1:1: connection refused"
    world.deliver(good, email())
    db.session.commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/mailboxes").get_data(as_text=True)
    assert "support@acme.example" in page and "old@acme.example" in page
    assert "connection refused" in page and "3 failed polls" in page
    ok = browser.post(f"/mailboxes/{good.id}/test", htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in ok and "<html" not in ok
    refused = browser.post(f"/mailboxes/{bad.id}/test", htmx=True).get_data(as_text=True)
    assert "could not connect" in refused
    db.session.expire_all()
    assert db.session.get(Mailbox, good.id).last_test_ok is True
    assert "Connected to 127.0.0.1" in browser.get("/mailboxes").get_data(as_text=True)  # kept, with its time


def test_technicians_see_health_but_cannot_test_and_other_msps_get_404(world, make_browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="tom@acme.example", role="technician")
    box = world.mailbox(msp)
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert "support@acme.example" in tom.get("/mailboxes").get_data(as_text=True)
    assert tom.post(f"/mailboxes/{box.id}/test").status_code == 403
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert "support@acme.example" not in eve.get("/mailboxes").get_data(as_text=True)
    assert eve.post(f"/mailboxes/{box.id}/test").status_code == 404
    assert db.session.scalar(select(Mailbox)).last_test_at is None

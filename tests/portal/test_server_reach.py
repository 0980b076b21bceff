"""Servers MSP admins type in, with several MSPs: no loopback, link-local or reserved addresses
(unless the operator allows the network), in the form and when a fetch or a send runs."""

import ipaddress

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox, Message
from portal.services import commit
from portal.outbound import servers as outbound_svc
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures

REFUSED = "cannot be used as a server here: it is "
ASK = "If this server is meant to be reached, ask the operator of this installation to allow its network."


@pytest.fixture
def other_msp(world):
    return world.msp("Other MSP")


def typed(msp, dovecot, mail_user, **changes):
    return {"client_id": str(msp.id), "address": "support@acme.example", "direction": "both", "status": "draft",
            "protocol": "imap", "security": "none", "host": "127.0.0.1", "port": str(dovecot.imap_port),
            "username": mail_user.name, "password": mail_user.password, "folders": "INBOX", "timeout": "10",
            "after_action_imap": "seen", "after_action_pop3": "keep", "plus_addressing": "off",
            "poll_interval": "60", "max_tries": "3", "cool_off": "0", **changes}


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "an address of this machine itself (loopback)"), ("localhost", "an address of this machine"),
    ("169.254.169.254", "a link-local address (such as a cloud metadata service)"),
    ("0.0.0.0", "an unspecified address"), ("224.0.0.1", "a multicast address"), ("240.0.0.1", "a reserved address"),
])
def test_msp_admins_are_refused_internal_servers_in_plain_words(admin, msp, other_msp, dovecot, mail_user, host, kind):
    answer = admin.post("/mailboxes/check", typed(msp, dovecot, mail_user, host=host), htmx=True).get_data(as_text=True)
    assert f"{host} {REFUSED}{kind}" in answer and ASK in answer
    assert "Connected" not in answer


def test_an_allowed_network_is_reached_and_a_denied_private_one_is_not(app, admin, msp, other_msp, dovecot, mail_user):
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    answer = admin.post("/mailboxes/check", typed(msp, dovecot, mail_user), htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in answer
    app.config["TIDEMARK_DENIED_SERVER_NETWORKS"] = (ipaddress.ip_network("10.0.0.0/8"),)
    denied = admin.post("/mailboxes/check", typed(msp, dovecot, mail_user, host="10.20.30.40"),
                        htmx=True).get_data(as_text=True)
    assert f"10.20.30.40 {REFUSED}in a network the operator has closed to mail servers" in denied


def test_operators_and_single_msp_installations_keep_their_freedom(app, world, browser, msp, dovecot, mail_user):
    world.user(msp, email="ana@acme.example")
    browser.sign_in("ana@acme.example")
    alone = browser.post("/mailboxes/check", typed(msp, dovecot, mail_user), htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in alone  # one MSP: as before
    world.msp("Other MSP")
    assert REFUSED in browser.post("/mailboxes/check", typed(msp, dovecot, mail_user), htmx=True).get_data(as_text=True)
    app.config["TIDEMARK_OPERATORS"] = ["ana@acme.example"]
    operator = browser.post("/mailboxes/check", typed(msp, dovecot, mail_user), htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in operator


def test_a_saved_mailbox_test_is_refused_too(world, admin, msp, other_msp, dovecot, mail_user):
    box = world.mailbox(msp, port=dovecot.imap_port, security="none", username=mail_user.name,
                        password=mail_user.password)
    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert f"127.0.0.1 {REFUSED}" in answer


def test_a_fetch_job_is_refused_and_the_mailbox_health_says_why(app, world, admin, msp, other_msp, dovecot, mail_user,
                                                                redis):
    from workers.fetch import fetch_mailbox

    box = world.mailbox(msp, port=dovecot.imap_port, security="none", username=mail_user.name,
                        password=mail_user.password, status="active", after_action="seen")
    report = fetch_mailbox(box.id)
    assert report["error"].startswith(f"127.0.0.1 {REFUSED}an address of this machine itself (loopback).")
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert box.failure_count == 1 and REFUSED in box.last_error
    assert f"127.0.0.1 {REFUSED}" in admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    # The operator allows loopback servers: the same job now fetches.
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    box.next_poll_at = None
    commit()
    assert fetch_mailbox(box.id)["error"] is None


def test_a_send_job_and_a_test_email_are_refused(app, world, admin, msp, other_msp, smtp_server, redis):
    from tests.mailfactory import email
    from workers.sending import send_due

    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, response_address="help@acme.example")
    outbound_svc.save_smtp_server({"host": "localhost", "port": smtp_server.port, "security": "none"},
                                  keys=app.config["TIDEMARK_ENCRYPTION_KEY"], mailbox=box)
    commit()
    test = admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert f"Not sent: localhost {REFUSED}an address of this machine itself" in test.get_data(as_text=True)
    world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire"))  # queues the acknowledgement
    send_due()
    message = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert message.delivery == "failed" and message.delivery_note.startswith(f"failed: localhost {REFUSED}")
    assert smtp_server.messages == []

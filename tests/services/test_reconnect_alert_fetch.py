"""A refused OAuth2 grant found by a fetch, end to end: the real authorisation server of
tests/oauth_server.py refuses the refresh, the real Dovecot checks tokens, the worker's fetch job
runs, and the alert recipients get ONE mail through aiosmtpd saying "reconnect needed" with the
provider's code; connecting again ends the streak."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox, MailboxAlert
from portal.models.base import utcnow
from portal.services import commit
from tests.mailfactory import email
from tests.services.test_mailbox_tokens import activate, connect, oauth_mailbox
from workers.fetch import fetch_mailbox


def kinds():
    db.session.expire_all()
    return [a.kind for a in db.session.scalars(select(MailboxAlert).order_by(MailboxAlert.id))]


def poll(mailbox_id):
    report = fetch_mailbox(mailbox_id)
    box = db.session.get(Mailbox, mailbox_id)
    box.next_poll_at = None
    commit()
    return report


def test_a_revoked_grant_alerts_once_per_streak_through_the_fetch(
        app, world, msp, oauth_dovecot, oauth_server, smtp_gateway, redis):
    user = oauth_dovecot.new_user("ana")
    oauth_dovecot.deliver(user, email())
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, alert_recipients=["noc@acme.example"],
                            acknowledge=False)
    grant = connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    oauth_server.revoke_grant(grant.access_token)
    mailbox.oauth.access_token_expires_at = utcnow() - timedelta(seconds=1)
    commit()
    for _ in range(3):
        assert "invalid_grant" in poll(mailbox.id)["error"]
    # One mail: the reconnect alert with the provider's words, not a "failing" one besides.
    assert kinds() == ["reconnect_needed"]
    assert [m.rcpt_tos for m in smtp_gateway.messages] == [["noc@acme.example"]]
    mail = smtp_gateway.last().message
    assert mail["Subject"] == "Mailbox support@acme.example must be connected again"
    body = mail.get_body(("plain",)).get_content()
    assert "invalid_grant" in body and grant.refresh_token not in body and grant.access_token not in body
    # Connected again: fetching works, and the next refusal is a new streak with a new alert.
    again = connect(app, db.session.get(Mailbox, mailbox.id), oauth_server, user.name)
    assert poll(mailbox.id)["error"] is None
    oauth_server.revoke_grant(again.access_token)
    box = db.session.get(Mailbox, mailbox.id)
    box.oauth.access_token_expires_at = utcnow() - timedelta(seconds=1)
    commit()
    assert "invalid_grant" in poll(mailbox.id)["error"]
    assert kinds() == ["reconnect_needed", "mailbox_recovered", "reconnect_needed"]
    reconnect = [m for m in smtp_gateway.messages if "must be connected again" in m.message["Subject"]]
    assert len(reconnect) == 2  # besides them, the new ticket's alert of the poll that worked
    assert len(smtp_gateway.messages) == 3

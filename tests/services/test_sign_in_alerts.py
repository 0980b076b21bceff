"""The silent death of tokens, said out loud: the mailbox's alert recipients hear 14, 3 and 1 days
before a grant or a client secret expires, and once per streak when the provider refuses the
sign-in. Each alert through the outbox to a real SMTP server (aiosmtpd), jobs run inline after the
commit (TIDEMARK_JOBS_SYNC) with a real Redis."""

import ipaddress
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox, MailboxAlert, Message
from portal.models.base import utcnow
from portal.services import commit
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailbox_alerts import send_expiry_alerts
from portal.services.mailboxes import save_mailbox
from workers.cron import SCHEDULE
from workers.maintenance import alert_expiring_sign_ins

GRANT_EXPIRES = datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc)
SECRET_EXPIRES = date(2027, 6, 30)
OAUTH = {"provider": "generic", "client_id": "tidemark-test", "token_url": "http://127.0.0.1:9/token",
         "authorize_url": "http://127.0.0.1:9/authorize"}


def oauth_mailbox(world, msp, address="m365@acme.example", recipients=("noc@acme.example",), **oauth):
    box = world.mailbox(msp, address=address, auth="oauth2", password=None, username=address,
                        alert_recipients=list(recipients), oauth={**OAUTH, **oauth})
    return db.session.get(Mailbox, box.id)


def connect(app, box, grant_expires_at=GRANT_EXPIRES):
    oauth_svc.store_grant(box.oauth, app.config["TIDEMARK_ENCRYPTION_KEY"], access_token="at-1",
                          access_expires_at=utcnow() + timedelta(hours=1), refresh_token="rt-1",
                          account="helpdesk@acme.example", grant_expires_at=grant_expires_at)
    box.status = "active"
    commit()


def run(now):
    made = send_expiry_alerts(now)
    commit()
    return [(a.kind, a.details["threshold"]) for a in made]


def alerts(kind=None):
    db.session.expire_all()
    query = select(MailboxAlert).order_by(MailboxAlert.id)
    return [a for a in db.session.scalars(query) if kind is None or a.kind == kind]


@pytest.fixture
def acme(world, smtp_gateway):
    return world.msp("Acme MSP")


def test_a_grant_alerts_14_3_and_1_days_before_each_once(app, world, acme, smtp_server):
    box = oauth_mailbox(world, acme)
    connect(app, box)
    assert run(GRANT_EXPIRES - timedelta(days=20)) == []
    assert run(GRANT_EXPIRES - timedelta(days=15)) == []
    assert run(GRANT_EXPIRES - timedelta(days=14, hours=1)) == [("grant_expiring", 14)]
    assert run(GRANT_EXPIRES - timedelta(days=13)) == []  # the next hour, the next day: not twice
    assert run(GRANT_EXPIRES - timedelta(days=4)) == []
    assert run(GRANT_EXPIRES - timedelta(days=2, hours=23)) == [("grant_expiring", 3)]
    assert run(GRANT_EXPIRES - timedelta(days=2)) == []
    assert run(GRANT_EXPIRES - timedelta(hours=23)) == [("grant_expiring", 1)]
    assert run(GRANT_EXPIRES - timedelta(hours=1)) == []
    assert run(GRANT_EXPIRES + timedelta(days=1)) == []  # past: the refused refresh says "reconnect needed"
    got = smtp_server.messages
    assert [m.rcpt_tos for m in got] == [["noc@acme.example"]] * 3
    first = got[0].message
    assert first["Subject"] == "The sign-in grant of m365@acme.example expires on 2027-03-31"
    text = first.get_body(("plain",)).get_content()
    assert "in 14 days" in text and "connected as helpdesk@acme.example" in text.replace("\n", " ")
    assert "Connect the mailbox again" in text
    assert "expires on 2027-03-31, in 3 days." in got[1].message.get_body(("plain",)).get_content()
    assert "expires on 2027-03-31, in 1 day." in got[2].message.get_body(("plain",)).get_content()
    recorded = alerts("grant_expiring")
    assert [a.details["threshold"] for a in recorded] == [14, 3, 1]
    assert all(a.recipients == ["noc@acme.example"] and a.sent_at is not None for a in recorded)
    assert all(m.details["automatic"] for m in db.session.scalars(select(Message).where(Message.direction == "out")))


def test_a_late_first_look_sends_only_the_tightest_threshold(app, world, acme, smtp_server):
    box = oauth_mailbox(world, acme, secret_expires=SECRET_EXPIRES.isoformat())
    assert run(datetime(2027, 6, 28, 9, 0, tzinfo=timezone.utc)) == [("secret_expiring", 3)]
    assert run(datetime(2027, 6, 28, 10, 0, tzinfo=timezone.utc)) == []
    assert run(datetime(2027, 6, 29, 9, 0, tzinfo=timezone.utc)) == [("secret_expiring", 1)]
    # Not connected: no grant to expire, yet the client secret is watched all the same.
    assert box.oauth.state == "not connected"
    mail = smtp_server.messages[0].message
    assert mail["Subject"] == "The client secret of m365@acme.example expires on 2027-06-30"
    assert "Create a new client secret" in mail.get_body(("plain",)).get_content()


def test_a_new_expiry_date_starts_the_thresholds_over(app, world, acme, smtp_server):
    box = oauth_mailbox(world, acme, secret_expires=SECRET_EXPIRES.isoformat())
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    assert run(datetime(2027, 6, 20, tzinfo=timezone.utc)) == [("secret_expiring", 14)]
    # The admin renews the secret and types its new date: the old date's alerts do not count.
    save_mailbox(acme, box.client, {"oauth": {"client_secret": "new-secret", "secret_expires": "2028-06-30"}},
                 keys=keys, actor=None, mailbox=box)
    commit()
    assert run(datetime(2027, 6, 29, tzinfo=timezone.utc)) == []
    assert run(datetime(2028, 6, 17, tzinfo=timezone.utc)) == [("secret_expiring", 14)]
    # The same for a grant: connected again, with a later expiry.
    connect(app, box, GRANT_EXPIRES)
    assert run(GRANT_EXPIRES - timedelta(days=10)) == [("grant_expiring", 14)]
    connect(app, box, GRANT_EXPIRES + timedelta(days=7))
    assert run(GRANT_EXPIRES - timedelta(days=5)) == [("grant_expiring", 14)]
    assert [a.details["expires_on"] for a in alerts("grant_expiring")] == ["2027-03-31", "2027-04-07"]
    assert len(smtp_server.messages) == 4


def test_no_recipients_no_alert_and_other_msps_hear_nothing(app, world, acme, smtp_server):
    # Several MSPs: the test's SMTP server on loopback is allowed as an operator would allow it.
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    beta = world.msp("Beta MSP")
    quiet = oauth_mailbox(world, acme, address="quiet@acme.example", recipients=())
    theirs = oauth_mailbox(world, beta, address="desk@beta.example", recipients=("ops@beta.example",))
    later = oauth_mailbox(world, acme, address="later@acme.example", recipients=("noc@acme.example",))
    connect(app, quiet)
    connect(app, theirs, GRANT_EXPIRES + timedelta(days=60))  # nowhere near its thresholds
    connect(app, later)
    assert run(GRANT_EXPIRES - timedelta(days=10)) == [("grant_expiring", 14)]
    assert [a.mailbox_id for a in alerts()] == [later.id]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["noc@acme.example"]]
    sent = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert sent.msp_id == acme.id and sent.mailbox_id == later.id
    # Recipients added later hear of the next threshold; nothing was recorded without them.
    quiet.alert_recipients = ["noc@acme.example"]
    commit()
    assert run(GRANT_EXPIRES - timedelta(days=9)) == [("grant_expiring", 14)]
    # A disabled mailbox is neither fetched nor alerted about.
    later.status = "disabled"
    commit()
    assert run(GRANT_EXPIRES - timedelta(days=2)) == [("grant_expiring", 3)]
    assert [a.mailbox_id for a in alerts()] == [later.id, quiet.id, quiet.id]


def test_reconnect_needed_alerts_once_per_streak_with_the_reason(app, world, acme, smtp_server):
    box = oauth_mailbox(world, acme)
    connect(app, box)
    reason = "The provider refused the grant (invalid_grant): the refresh token was revoked. Connect again."
    assert oauth_svc.reconnect_needed(box.oauth, reason) is True
    commit()
    assert oauth_svc.reconnect_needed(box.oauth, reason) is False  # the same streak
    commit()
    assert [a.kind for a in alerts()] == ["reconnect_needed"]
    mail = smtp_server.last().message
    assert mail["Subject"] == "Mailbox m365@acme.example must be connected again"
    text = mail.get_body(("plain",)).get_content()
    assert "invalid_grant" in text and "helpdesk@acme.example" in text
    assert len(smtp_server.messages) == 1
    # Connecting again ends the streak; the next refusal is news again.
    connect(app, box)
    assert oauth_svc.reconnect_needed(box.oauth, "AADSTS7000222: the client secret has expired.") is True
    commit()
    assert [a.details["reason"] for a in alerts("reconnect_needed")] == [
        reason, "AADSTS7000222: the client secret has expired."]
    assert "AADSTS7000222" in smtp_server.last().message.get_body(("plain",)).get_content()
    assert len(smtp_server.messages) == 2
    # Without recipients the streak is still recorded, and nothing is sent.
    box.alert_recipients = []
    connect(app, box)
    oauth_svc.reconnect_needed(box.oauth, reason)
    commit()
    assert len(alerts("reconnect_needed")) == 3 and alerts("reconnect_needed")[-1].recipients == []
    assert len(smtp_server.messages) == 2


def test_the_scheduler_runs_the_expiry_job_hourly(app, world, acme, smtp_server):
    assert (alert_expiring_sign_ins, 3600) in SCHEDULE
    box = oauth_mailbox(world, acme)
    connect(app, box, datetime.combine(utcnow().date() + timedelta(days=10), time(12), timezone.utc))
    assert alert_expiring_sign_ins() == 1
    assert alert_expiring_sign_ins() == 0
    assert [m.rcpt_tos for m in smtp_server.messages] == [["noc@acme.example"]]  # sent after the job's commit


def test_the_alert_templates_are_edited_like_the_others(app, world, acme, smtp_server):
    from portal.outbound.templates import save_template

    save_template(acme, "sign_in_expiring", "[{{ msp.name }}] {{ mailbox.expiring }} ends {{ mailbox.expires_on }}\n"
                  "{{ mailbox.address }}: {{ mailbox.days_left }} days left ({{ mailbox.account }}).\n", "", True, None)
    save_template(acme, "reconnect_needed", "Reconnect {{ mailbox.address }}\nWhy: {{ mailbox.reason }}\n", "", True,
                  None)
    commit()
    box = oauth_mailbox(world, acme)
    connect(app, box)
    assert run(GRANT_EXPIRES - timedelta(days=3, hours=1)) == [("grant_expiring", 3)]
    oauth_svc.reconnect_needed(box.oauth, "invalid_grant: the grant was revoked.")
    commit()
    expiring, reconnect = (m.message for m in smtp_server.messages)
    assert expiring["Subject"] == "[Acme MSP] sign-in grant ends 2027-03-31"
    assert expiring.get_body(("plain",)).get_content().strip() == (
        "m365@acme.example: 3 days left (helpdesk@acme.example).")
    assert reconnect["Subject"] == "Reconnect m365@acme.example"
    assert reconnect.get_body(("plain",)).get_content().strip() == "Why: invalid_grant: the grant was revoked."


def test_alerts_about_a_mailbox_go_through_the_gateway_not_its_own_server(app, world, acme, smtp_server):
    from portal.outbound.servers import save_smtp_server
    from tests.dovecot import unused_port

    box = oauth_mailbox(world, acme)
    connect(app, box)
    # Its own outgoing server is as dead as its sign-in: the alert must not depend on it.
    save_smtp_server({"host": "127.0.0.1", "port": unused_port(), "security": "none"},
                     keys=app.config["TIDEMARK_ENCRYPTION_KEY"], mailbox=box)
    commit()
    assert run(GRANT_EXPIRES - timedelta(days=1)) == [("grant_expiring", 1)]
    oauth_svc.reconnect_needed(box.oauth, "invalid_grant: revoked.")
    commit()
    assert [m.message["Subject"] for m in smtp_server.messages] == [
        "The sign-in grant of m365@acme.example expires on 2027-03-31",
        "Mailbox m365@acme.example must be connected again"]
    assert smtp_server.last().mail_from == "m365@acme.example"  # from the mailbox, as its other mail

"""A mailbox's direction (never fetched when outgoing only, replies through the default gateway
when incoming only), the connection test as the direction asks, the folder picker it fills, and
activation only after a successful test of the saved settings: against a real Dovecot and a real
SMTP server (aiosmtpd)."""

from datetime import timedelta

from sqlalchemy import delete, func, select

from portal.extensions import db
from portal.inbound.fetch import run_fetch
from portal.inbound.health import due_mailboxes
from portal.models import Mailbox, Message, RawMessage, SmtpServer
from portal.models.base import utcnow
from portal.outbound.servers import save_outgoing_server
from portal.services import commit
from portal.services.mailboxes import (
    ACTIVE_CONNECTION_CHANGED,
    NOT_TESTED,
    TEST_FAILED,
    TEST_STALE,
    save_mailbox,
    set_status,
)
from portal.services import ValidationError
from portal.services.mailbox_checks import FOLDERS_MOST, known_folders, remember_folders
from portal.transport import open_session
from tests.dovecot import unused_port
from tests.mailfactory import email
from tests.portal.test_mailbox_forms import form as mailbox_form
from workers.sending import send_due


def _box(app, world, msp, dovecot, mail_user, **values):
    values = {"protocol": "imap", "security": "none", "host": "127.0.0.1", "port": dovecot.port("imap", "none"),
              "username": mail_user.name, "password": mail_user.password, "after_action": "seen", **values}
    return world.mailbox(msp, address="support@acme.example",
                         routes=[{"name": "Everything else", "client": msp, "fallback": True}], **values)


def _keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def _refusal(app, box) -> list[str]:
    try:
        set_status(box, "active", keys=_keys(app), actor=None)
    except ValidationError as exc:
        db.session.rollback()
        return exc.errors["status"]
    raise AssertionError("activated")


def test_activation_needs_a_successful_test_of_the_saved_settings(app, world, msp, admin, dovecot, mail_user):
    box = _box(app, world, msp, dovecot, mail_user)
    admin.post(f"/mailboxes/{box.id}/activate")
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Not activated: " + NOT_TESTED in page.replace("&#39;", "'")
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "draft"

    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in answer
    admin.post(f"/mailboxes/{box.id}/activate")
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert box.status == "active"

    # An active mailbox keeps the settings it was tested with: a new port is refused from a page.
    try:
        save_mailbox(msp, msp, {"port": unused_port(), "password": mail_user.password}, keys=_keys(app), actor=None, mailbox=box, require_test=True)
    except ValidationError as exc:
        assert exc.errors["status"] == [ACTIVE_CONNECTION_CHANGED]
    else:
        raise AssertionError("saved")
    db.session.rollback()
    # Disabled, the port changed after the test: the test no longer counts.
    box = db.session.get(Mailbox, box.id)
    set_status(box, "disabled", keys=_keys(app), actor=None)
    save_mailbox(msp, msp, {"port": unused_port(), "password": mail_user.password}, keys=_keys(app), actor=None, mailbox=box, require_test=True)
    commit()
    assert _refusal(app, box) == [TEST_STALE]
    # Tested again on the wrong port: failed.
    box = db.session.get(Mailbox, box.id)
    assert "could not connect" in admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    db.session.expire_all()
    assert _refusal(app, db.session.get(Mailbox, box.id)) == [TEST_FAILED]
    # A change that is not a connection setting leaves a successful test standing.
    box = db.session.get(Mailbox, box.id)
    save_mailbox(msp, msp, {"port": dovecot.port("imap", "none"), "password": mail_user.password}, keys=_keys(app), actor=None, mailbox=box)
    commit()
    assert admin.post(f"/mailboxes/{box.id}/test", htmx=True).status_code == 200
    box = db.session.get(Mailbox, box.id)
    save_mailbox(msp, msp, {"name": "Support desk"}, keys=_keys(app), actor=None, mailbox=box)
    set_status(box, "active", keys=_keys(app), actor=None)
    commit()
    assert db.session.get(Mailbox, box.id).status == "active"


def test_the_test_lists_the_servers_folders_for_the_form(app, world, msp, admin, dovecot, mail_user, redis):
    dovecot.deliver(mail_user, email(subject="kept"), folder="Archive")
    box = _box(app, world, msp, dovecot, mail_user)
    edit = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert 'name="folder_picks"' not in edit  # nothing known before a test
    assert "Connected to" in admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    edit = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert 'name="folder_picks" value="INBOX" checked' in edit
    assert 'name="folder_picks" value="Archive" >' in edit
    assert '<datalist id="known-folders">' in edit and '<option value="Archive">' in edit
    # Ticked folders and typed ones are read together; typing stays possible.
    data = mailbox_form(msp, host="127.0.0.1", port=str(dovecot.port("imap", "none")), security="none",
                        username=mail_user.name, password=mail_user.password, folders="Later",
                        after_action_imap="move", processed_folder="Archive")
    data["folder_picks"] = ["INBOX", "Archive"]
    resp = admin.post(f"/mailboxes/{box.id}/edit", data)
    assert resp.status_code == 303, resp.get_data(as_text=True)
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert box.folders == ["INBOX", "Archive", "Later"] and box.processed_folder == "Archive"


def test_an_outgoing_only_mailbox_is_never_fetched_and_its_test_tries_the_smtp_server(
        app, world, msp, admin, dovecot, mail_user, smtp_server, redis):
    box = _box(app, world, msp, dovecot, mail_user, direction="outgoing", status="active")
    save_outgoing_server(box, {"host": "127.0.0.1", "port": smtp_server.port, "security": "none"}, keys=_keys(app),
                         actor=None)
    commit()
    dovecot.deliver(mail_user, email(sender="alice@contoso.com", subject="Printer"))
    assert box not in due_mailboxes(utcnow() + timedelta(days=1))
    report = run_fetch(box, open_session=open_session, keys=_keys(app), secret=b"s", commit=commit)
    assert report.skipped == "mailbox is outgoing only"
    answer = admin.post(f"/mailboxes/{box.id}/fetch", htmx=True).get_data(as_text=True)
    assert "outgoing only: nothing is read from it" in answer
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == 0

    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert f"Outgoing (its own outgoing server): connected to 127.0.0.1:{smtp_server.port}" in answer
    assert "INBOX has" not in answer  # the incoming server is not tried
    db.session.expire_all()
    server = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id))
    assert server.last_test_ok is True and "connected to" in server.last_test_message
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Last test" in page and "Fetch now" not in page
    # A server that does not answer fails the test, on the mailbox and on the server.
    save_outgoing_server(db.session.get(Mailbox, box.id), {"host": "127.0.0.1", "port": unused_port(),
                                                           "security": "none"}, keys=_keys(app), actor=None)
    commit()
    admin.post(f"/mailboxes/{box.id}/test", htmx=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).last_test_ok is False
    assert db.session.get(SmtpServer, server.id).last_test_ok is False


def test_an_incoming_only_mailbox_replies_through_the_default_gateway(app, world, msp, smtp_gateway):
    app.config["TIDEMARK_JOBS_SYNC"] = False  # the sender runs by hand below
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, direction="incoming")
    # Its own outgoing server would refuse every connection: it must not be used.
    save_outgoing_server(box, {"host": "127.0.0.1", "port": unused_port(), "security": "none"}, keys=_keys(app),
                         actor=None)
    commit()
    world.deliver(box, email(sender="alice@contoso.com", subject="Printer", message_id="<p1@contoso.com>"))
    assert send_due() == {"sent": 1}
    assert smtp_gateway.last().rcpt_tos == ["alice@contoso.com"]
    # No gateway: the acknowledgement fails in plain words instead of using the mailbox's server.
    db.session.execute(delete(SmtpServer).where(SmtpServer.mailbox_id.is_(None)))
    commit()
    world.deliver(box, email(sender="bob@contoso.com", subject="Scanner", message_id="<s1@contoso.com>"))
    send_due()
    failed = db.session.scalar(select(Message).where(Message.direction == "out").order_by(Message.id.desc()))
    assert failed.delivery == "failed" and "is incoming only" in failed.delivery_note


def test_send_test_email_is_the_outgoing_servers_last_test(app, world, msp, admin, smtp_server, redis):
    box = world.mailbox(msp)
    save_outgoing_server(box, {"host": "127.0.0.1", "port": smtp_server.port, "security": "none"}, keys=_keys(app),
                         actor=None)
    commit()
    answer = admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "ops@acme.example"},
                        htmx=True).get_data(as_text=True)
    assert "Sent to ops@acme.example" in answer
    db.session.expire_all()
    server = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id))
    assert server.last_test_ok is True and server.last_test_message.startswith("Sent to ops@acme.example")
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Sent to ops@acme.example" in page
    # A wrong recipient never reached the server: its last test stands.
    admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "not an address"}, htmx=True)
    db.session.expire_all()
    assert db.session.get(SmtpServer, server.id).last_test_message.startswith("Sent to ops@acme.example")


def test_a_server_listing_endless_folders_is_offered_only_the_first_thousand(app, redis):
    """Any number of folders may come back from a server someone typed in; the form gets a bounded list."""
    remember_folders(4242, [f"Folder {n:05d}" for n in range(1500)] + ["INBOX"])
    kept = known_folders(4242)
    assert len(kept) == FOLDERS_MOST == 1000
    assert kept[0] == "Folder 00000" and kept == sorted(kept)

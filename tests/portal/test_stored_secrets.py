"""A saved password goes only to the server it was saved for, and every test that uses one is in
the mailbox's history."""

import socket
import threading

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Mailbox, SmtpServer
from portal.outbound import servers as outbound_svc
from portal.services.mailboxes import password_of
from tests.smtp import SMTP_PASSWORD, SMTP_USER, smtp_server, smtp_server_session  # noqa: F401 - fixtures

RETYPE = "The server or user name differs from the saved one: type the password again."


class LoginCatcher:
    """Enough of an IMAP server to be sent a LOGIN: keeps every line it receives."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as io:
                io.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
                io.flush()
                for raw in io:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self.lines.append(line)
                    tag, _, command = line.partition(" ")
                    if command.upper().startswith("CAPABILITY"):
                        io.write(b"* CAPABILITY IMAP4rev1\r\n" + tag.encode() + b" OK done\r\n")
                    else:
                        io.write(tag.encode() + b" NO no\r\n")
                    io.flush()

    def close(self):
        self.listener.close()


@pytest.fixture
def catcher():
    server = LoginCatcher()
    yield server
    server.close()


@pytest.fixture
def box(world, msp, dovecot, mail_user):
    return world.mailbox(msp, port=dovecot.imap_port, security="none", username=mail_user.name,
                         password=mail_user.password)


def typed(msp, box, **changes):
    return {"client_id": str(msp.id), "address": box.address, "direction": "both", "status": "draft",
            "protocol": "imap", "security": "none", "host": box.host, "port": str(box.port), "username": box.username,
            "password": "", "folders": "INBOX", "timeout": "10", "after_action_imap": "seen",
            "after_action_pop3": "keep", "plus_addressing": "off", "poll_interval": "60", "max_tries": "3",
            "cool_off": "0", "default_status": "open", "default_priority": "high", **changes}


def secret_tests():
    return db.session.scalars(select(AuditEntry).where(AuditEntry.action.like("%(saved password)"))
                              .order_by(AuditEntry.id)).all()


@pytest.mark.parametrize("change", ["port", "host", "username", "protocol"])
def test_the_saved_password_is_not_sent_to_another_server(admin, msp, box, catcher, mail_user, change):
    values = {"port": {"port": str(catcher.port)},
              "host": {"host": "localhost", "port": str(catcher.port)},
              "username": {"username": "someone-else", "port": str(catcher.port)},
              "protocol": {"protocol": "pop3", "after_action_pop3": "keep", "port": str(catcher.port)}}[change]
    answer = admin.post(f"/mailboxes/{box.id}/check", typed(msp, box, **values), htmx=True).get_data(as_text=True)
    assert RETYPE in answer
    assert not any(mail_user.password in line for line in catcher.lines)
    assert catcher.lines == []  # not even a connection
    # Typed again, it is the admin's choice to send it there.
    typed_again = admin.post(f"/mailboxes/{box.id}/check",
                             typed(msp, box, port=str(catcher.port), password="typed-on-purpose"), htmx=True)
    assert "authentication failed" in typed_again.get_data(as_text=True)
    assert any("LOGIN" in line and "typed-on-purpose" in line for line in catcher.lines)
    assert secret_tests() == []


def test_tests_with_the_saved_password_are_in_the_history(admin, msp, box):
    answer = admin.post(f"/mailboxes/{box.id}/check", typed(msp, box), htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in answer
    answer = admin.post(f"/mailboxes/{box.id}/test", htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in answer
    entries = secret_tests()
    assert [e.action for e in entries] == ["form test (saved password)", "connection test (saved password)"]
    assert all(e.actor_label == "ana@acme.example" for e in entries)
    assert entries[0].changes["server"] == [None, f"127.0.0.1:{box.port}"]
    assert entries[0].changes["result"][1].startswith("Connected to 127.0.0.1")
    history = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "connection test (saved password)" in history


def test_a_changed_server_is_not_saved_with_the_old_password(app, admin, msp, box, mail_user):
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    refused = admin.post(f"/mailboxes/{box.id}/edit", typed(msp, box, host="imap.elsewhere.example"), htmx=True)
    assert refused.status_code == 422 and RETYPE in refused.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).host == "127.0.0.1"
    same = admin.post(f"/mailboxes/{box.id}/edit", typed(msp, box, host="imap.elsewhere.example",
                                                        password=mail_user.password))
    assert same.status_code == 303
    db.session.expire_all()
    saved = db.session.get(Mailbox, box.id)
    assert saved.host == "imap.elsewhere.example" and password_of(saved, keys) == mail_user.password
    # The same password typed again is no change of password.
    last = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "updated").order_by(AuditEntry.id.desc())).first()
    assert last.changes["host"] == ["127.0.0.1", "imap.elsewhere.example"] and "password" not in last.changes
    # Settings that do not name another server keep the saved password.
    assert admin.post(f"/mailboxes/{box.id}/edit", typed(msp, saved, poll_interval="120")).status_code == 303


def test_the_outgoing_servers_password_stays_with_its_server(app, world, admin, msp, smtp_server):
    box = world.mailbox(msp)
    server = {"host": smtp_server.host, "port": str(smtp_server.port), "security": "none", "username": SMTP_USER,
              "from_address": "", "timeout": "10"}
    assert admin.post(f"/mailboxes/{box.id}/outgoing", {**server, "password": SMTP_PASSWORD}).status_code == 303
    moved = admin.post(f"/mailboxes/{box.id}/outgoing", {**server, "host": "smtp.elsewhere.example"}, htmx=True)
    assert moved.status_code == 422 and RETYPE in moved.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id)).host == smtp_server.host
    assert admin.post(f"/mailboxes/{box.id}/outgoing", {**server, "timeout": "20"}).status_code == 303
    sent = admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Sent to qa@acme.example" in sent.get_data(as_text=True)
    assert smtp_server.last().login == SMTP_USER
    entry = secret_tests()[-1]
    assert entry.action == "test email (saved password)" and entry.actor_label == "ana@acme.example"
    assert entry.changes["server"] == [None, f"{smtp_server.host}:{smtp_server.port}"]


def test_the_gateway_password_stays_with_its_server_too(app, smtp_server):
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    gateway = {"host": smtp_server.host, "port": smtp_server.port, "security": "none", "username": SMTP_USER}
    outbound_svc.save_smtp_server({**gateway, "password": SMTP_PASSWORD}, keys=keys)
    from portal.services import ValidationError

    with pytest.raises(ValidationError) as caught:
        outbound_svc.save_smtp_server({**gateway, "port": 2525}, keys=keys)
    assert RETYPE in caught.value.errors["password"][0]

"""The default gateway has the same "Send test email" as a mailbox's outgoing server: through the
saved gateway, limited and recorded the same way (portal/outbound/test_mail.py)."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry
from portal.outbound.servers import save_smtp_server
from portal.services import commit


def test_the_settings_page_sends_a_test_email_through_the_saved_gateway(app, admin, smtp_server, redis):
    assert "Send test email" not in admin.get("/settings/mail").get_data(as_text=True)  # nothing saved yet
    save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                      "from": "gateway@installation.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    assert "Send test email" in admin.get("/settings/mail").get_data(as_text=True)
    resp = admin.post("/settings/mail/test", {"recipient": "qa@acme.example"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Sent to qa@acme.example through 127.0.0.1 (the default gateway)." in body
    got = smtp_server.last().message
    assert got["To"] == "qa@acme.example" and got["From"] == "gateway@installation.example"
    # The same test mail as a mailbox's: auto-generated, with its date and id, saying what was tried.
    assert got["Subject"] == "Tidemark test email for the default gateway"
    assert got["Auto-Submitted"] == "auto-generated" and got["Date"] and got["Message-ID"]
    assert got.get_content().rstrip() == (f"This is a test email from Tidemark, sent through 127.0.0.1:{smtp_server.port}, "
                                 "the default gateway. Nothing needs to be done.")
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "test email sent"))
    assert entry.record_type == "installation" and entry.changes["recipient"] == [None, "qa@acme.example"]


def test_a_gateway_that_refuses_says_so_in_plain_words(app, admin, redis):
    from tests.conftest import free_port

    save_smtp_server({"host": "127.0.0.1", "port": free_port(), "security": "none"},
                     keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    body = admin.post("/settings/mail/test", {"recipient": "qa@acme.example"}, htmx=True).get_data(as_text=True)
    assert "Not sent: could not connect to 127.0.0.1:" in body and "connection refused" in body


def test_only_who_may_change_the_gateway_may_test_it(world, msp, make_browser, redis):
    world.user(msp, email="tom@acme.example", role="technician")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.post("/settings/mail/test", {"recipient": "qa@acme.example"}).status_code == 403
    assert tom.post("/settings/mail/test", {"recipient": "qa@acme.example"}, token=False).status_code == 302  # CSRF


def test_the_default_gateway_has_test_connection_which_keeps_its_last_result(app, admin, smtp_server, redis):
    from tests.conftest import free_port

    assert "no default gateway yet" in admin.post("/settings/mail/check", htmx=True).get_data(as_text=True)
    closed = free_port()
    save_smtp_server({"host": "127.0.0.1", "port": closed, "security": "none"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    assert "Test connection" in admin.get("/settings/mail").get_data(as_text=True)
    refused = admin.post("/settings/mail/check", htmx=True).get_data(as_text=True)
    assert f"Not connected: could not connect to 127.0.0.1:{closed}" in refused and "<html" not in refused
    assert f"Last test: Not connected: could not connect to 127.0.0.1:{closed}" in admin.get("/settings/mail").get_data(as_text=True)

    save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none"},
                     keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    # A click before htmx had taken the form (a plain POST) gets the whole page, the answer in its place.
    plain = admin.post("/settings/mail/check").get_data(as_text=True)
    assert "<html" in plain and f'<div id="check-result" aria-live="polite"><p class="ok-text" role="status">Connected: ' \
                                f"connected to 127.0.0.1:{smtp_server.port}" in plain
    assert smtp_server.messages == []  # signing in sends nothing
    tested = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "gateway tested")
                                     .order_by(AuditEntry.id)))
    assert [e.record_type for e in tested] == ["installation", "installation"]
    assert tested[-1].changes["result"][1].startswith("Connected: ")


def test_only_who_may_change_the_gateway_may_test_its_connection(world, msp, make_browser, redis):
    world.user(msp, email="tom@acme.example", role="technician")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.post("/settings/mail/check").status_code == 403
    assert tom.post("/settings/mail/check", token=False).status_code == 302  # CSRF

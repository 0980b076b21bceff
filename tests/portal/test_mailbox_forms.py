"""The mailbox settings form, status, removal, typed-settings test and the outgoing server."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Mailbox, SmtpServer, Ticket
from portal.models.base import utcnow
from portal.services import commit
from portal.services.mailboxes import password_of

BASE = {
    "address": "Support@Acme.example", "aliases": "help@acme.example\nhelpdesk@acme.example", "name": "Support",
    "direction": "both", "status": "draft", "protocol": "imap", "security": "ssl", "host": "imap.acme.example",
    "port": "", "username": "support", "password": "first-secret", "shared_mailbox": "",
    "verify_tls": "y", "folders": "INBOX\nPartners", "after_action_imap": "move", "processed_folder": "Done",
    "after_action_pop3": "keep", "response_address": "", "acknowledge": "y", "alert_recipients": "ops@acme.example",
    "default_status": "open", "default_priority": "high", "default_type": "incident",
    "ignore_senders": "noreply@monitor.example\nalerts.example", "ignore_subjects": "[monitoring]",
    "plus_addressing": "mixed", "keep_raw_attachment": "y", "poll_interval": "120", "timeout": "20",
    "max_tries": "4", "cool_off": "600", "skip_windows": "02:00-04:00", "sync_start_date": "2026-01-31",
}


def form(msp, **changes):
    data = {**BASE, "client_id": str(msp.id), **changes}
    return {k: v for k, v in data.items() if v is not None}


def test_a_new_mailbox_keeps_every_setting_and_the_password_encrypted(app, admin, msp):
    resp = admin.post("/mailboxes/new", form(msp))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = db.session.scalar(select(Mailbox))
    assert resp.headers["Location"].endswith(f"/mailboxes/{box.id}")
    assert (box.address, box.aliases, box.name) == ("support@acme.example", ["help@acme.example", "helpdesk@acme.example"], "Support")
    assert (box.port, box.folders, box.after_action, box.processed_folder) == (993, ["INBOX", "Partners"], "move", "Done")
    assert (box.default_status, box.default_priority, box.default_type) == ("open", "high", "incident")
    assert box.ignore_senders == ["noreply@monitor.example", "alerts.example"] and box.ignore_subjects == ["[monitoring]"]
    assert (box.plus_addressing, box.keep_raw_attachment, box.poll_interval, box.timeout) == ("mixed", True, 120, 20)
    assert (box.max_tries, box.cool_off, box.skip_windows) == (4, 600, ["02:00-04:00"])
    assert box.sync_start_date.isoformat() == "2026-01-31" and box.alert_recipients == ["ops@acme.example"]
    assert b"first-secret" not in box.password_encrypted
    assert password_of(box, app.config["TIDEMARK_ENCRYPTION_KEY"]) == "first-secret"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "mailbox"))
    assert entry.action == "created" and entry.actor_label == "ana@acme.example"


def test_the_password_is_never_sent_back_and_empty_means_unchanged(app, admin, msp):
    admin.post("/mailboxes/new", form(msp))
    box = db.session.scalar(select(Mailbox))
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert "first-secret" not in page and "stored; leave empty to keep it" in page
    assert 'value="imap.acme.example"' in page and "helpdesk@acme.example" in page
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", name="Support desk"))
    assert resp.status_code == 303
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert box.name == "Support desk"
    assert password_of(box, app.config["TIDEMARK_ENCRYPTION_KEY"]) == "first-secret"
    # Another server does not get the saved password: it is typed again (the same one is no change).
    assert admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", host="imap2.acme.example",
                                                        name="Support desk")).status_code == 422
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="first-secret", host="imap2.acme.example",
                                                        name="Support desk"))
    assert resp.status_code == 303
    admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="second-secret", host="imap2.acme.example",
                                                 name="Support desk"))
    db.session.expire_all()
    assert password_of(db.session.get(Mailbox, box.id), app.config["TIDEMARK_ENCRYPTION_KEY"]) == "second-secret"
    changes = [e.changes for e in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "updated"))]
    assert changes[0] == {"name": ["Support", "Support desk"]}
    assert changes[1] == {"host": ["imap.acme.example", "imap2.acme.example"]}
    assert changes[2] == {"password": ["(set)", "(changed)"]}
    assert not any("secret" in str(c) for c in changes)


def test_wrong_values_come_back_next_to_their_fields_and_nothing_is_saved(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, address="not-an-address", port="99999", host="bad host!",
                                             poll_interval="often", skip_windows="25:00-26:00",
                                             aliases="ok@acme.example\nnope"), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "<html" not in body
    for name in ("address", "port", "host", "poll_interval", "skip_windows", "aliases"):
        assert f'id="{name}-error"' in body, name
    assert "1 to 65535" in body and "not a window like 02:00-04:00" in body
    assert db.session.scalar(select(Mailbox)) is None


def test_after_processing_is_checked_for_the_protocol_in_use(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, after_action_imap="move", processed_folder=""))
    assert resp.status_code == 422
    assert 'id="processed_folder-error"' in resp.get_data(as_text=True)
    # POP3 uses its own choice; the IMAP one typed before is not applied.
    resp = admin.post("/mailboxes/new", form(msp, protocol="pop3", security="ssl", after_action_pop3="delete"))
    assert resp.status_code == 303
    box = db.session.scalar(select(Mailbox))
    assert (box.protocol, box.after_action, box.port) == ("pop3", "delete", 995)
    # Editing it shows the POP3 choices; the IMAP ones are there, hidden, for a switch back.
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert '<div data-show-when="protocol=imap graph" hidden>' in page and '<div data-protocol="pop3" >' in page
    assert re.search(r'<option selected value="delete">delete from the server</option>\s*</select>', page)


def test_activation_is_refused_with_its_reasons_next_to_the_status(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, status="active", password="", username=""))
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="status-error"' in body
    assert "Set the user name before activating." in body and "Set the password before activating." in body
    assert db.session.scalar(select(Mailbox)) is None


def test_activate_disable_and_delete_from_the_mailbox_page(world, admin, msp):
    box = world.mailbox(msp, routes=[{"name": "Everything else", "client": msp, "fallback": True}])
    box.last_test_at, box.last_test_ok = utcnow(), True  # tested (tests/portal/test_mailbox_direction.py)
    commit()
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Activate" in page and "Everything else" in page and "hx-confirm" in page
    assert admin.post(f"/mailboxes/{box.id}/activate").status_code == 303
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "active"
    admin.post(f"/mailboxes/{box.id}/disable", htmx=True)
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "disabled"
    actions = [e.action for e in db.session.scalars(select(AuditEntry).where(AuditEntry.record_id == box.id))]
    assert actions.count("updated") == 2


def test_activation_without_a_password_is_refused_with_a_reason(world, admin, msp):
    box = world.mailbox(msp, password=None)
    resp = admin.post(f"/mailboxes/{box.id}/activate")
    assert resp.status_code == 303
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Not activated: Set the password before activating." in page
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "draft"


def test_deleting_a_mailbox_keeps_its_tickets(world, admin, msp):
    from tests.mailfactory import email

    box = world.mailbox(msp)
    world.deliver(box, email())
    box_id = box.id
    admin.post(f"/mailboxes/{box_id}/outgoing", {"host": "smtp.acme.example", "security": "starttls", "timeout": "30"})
    resp = admin.post(f"/mailboxes/{box_id}/delete", htmx=True)
    assert resp.headers["HX-Redirect"].endswith("/mailboxes")
    db.session.expire_all()
    assert db.session.get(Mailbox, box_id) is None
    ticket = db.session.scalar(select(Ticket))
    assert ticket is not None and ticket.mailbox_id is None
    assert db.session.scalar(select(SmtpServer)) is None
    assert "Its ticket stays." in admin.get("/mailboxes").get_data(as_text=True)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "deleted")).record_id == box_id


def test_test_connection_uses_the_typed_values_and_the_stored_password(world, admin, msp, dovecot, mail_user):
    box = world.mailbox(msp, host="127.0.0.1", port=dovecot.imap_port, security="none", username=mail_user.name,
                        password=mail_user.password, timeout=30)
    typed = form(msp, host="127.0.0.1", port=str(dovecot.imap_port), security="none", username=mail_user.name,
                 password="", timeout="10")
    ok = admin.post(f"/mailboxes/{box.id}/check", typed, htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in ok  # the stored password, for the server it was stored for
    elsewhere = admin.post(f"/mailboxes/{box.id}/check", {**typed, "port": "1"}, htmx=True).get_data(as_text=True)
    assert "type the password again" in elsewhere
    wrong = admin.post(f"/mailboxes/{box.id}/check", {**typed, "password": "not-it"}, htmx=True).get_data(as_text=True)
    assert "authentication failed" in wrong and "not-it" not in wrong
    unsaved = admin.post("/mailboxes/check", {**typed, "password": mail_user.password}, htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in unsaved
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert box.timeout == 30 and box.last_test_at is None  # typed values are tried, not saved


def test_the_outgoing_server_is_saved_audited_and_sends_a_test_email(app, world, admin, msp, smtp_server):
    box = world.mailbox(msp)
    bad = admin.post(f"/mailboxes/{box.id}/outgoing", {"host": "bad host!", "port": "70000", "security": "none",
                                                       "timeout": "30", "from_address": "nope"}, htmx=True)
    body = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert 'id="host-error"' in body and 'id="from_address-error"' in body and 'id="port-error"' in body
    resp = admin.post(f"/mailboxes/{box.id}/outgoing", {
        "host": smtp_server.host, "port": str(smtp_server.port), "security": "none", "username": "",
        "password": "smtp-secret", "from_address": "bounce@acme.example", "timeout": "10"})
    assert resp.status_code == 303
    server = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id))
    assert (server.port, server.from_address, server.verify_tls) == (smtp_server.port, "bounce@acme.example", False)
    assert b"smtp-secret" not in server.password_encrypted
    page = admin.get(f"/mailboxes/{box.id}/outgoing").get_data(as_text=True)
    assert "smtp-secret" not in page and "stored; leave empty to keep it" in page
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "outgoing server set"))
    assert entry.changes["outgoing host"] == [None, smtp_server.host]
    assert entry.changes["outgoing password"] == [None, "(set)"]

    result = admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Sent to qa@acme.example" in result.get_data(as_text=True)
    received = smtp_server.last()
    assert received.message["To"] == "qa@acme.example" and received.message["From"] == "support@acme.example"
    assert "Not sent" in admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "nobody"}).get_data(as_text=True)

    admin.post(f"/mailboxes/{box.id}/outgoing/remove", htmx=True)
    assert db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id)) is None


@pytest.mark.parametrize("method, path", [
    ("get", "/mailboxes/new"), ("get", "/mailboxes/{id}/edit"), ("post", "/mailboxes/{id}/edit"),
    ("post", "/mailboxes/{id}/activate"), ("post", "/mailboxes/{id}/disable"), ("post", "/mailboxes/{id}/delete"),
    ("post", "/mailboxes/{id}/check"), ("get", "/mailboxes/{id}/outgoing"), ("post", "/mailboxes/{id}/outgoing/test"),
    ("post", "/mailboxes/{id}/outgoing/remove"),
])
def test_technicians_get_403_and_other_msps_404(world, make_browser, msp, method, path):
    box = world.mailbox(msp)
    world.user(msp, email="tom@acme.example", role="technician")
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    tom, eve = make_browser(), make_browser()
    tom.sign_in("tom@acme.example")
    eve.sign_in("eve@other.example")
    url = path.format(id=box.id)
    assert getattr(tom, method)(url).status_code == 403
    if "{id}" in path:
        assert getattr(eve, method)(url).status_code == 404
        assert eve.get(f"/mailboxes/{box.id}").status_code == 404
    assert tom.get(f"/mailboxes/{box.id}").status_code == 200  # technicians read the configuration
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).status == "draft"


def test_posts_without_csrf_are_refused(world, admin, msp):
    box = world.mailbox(msp)
    assert admin.post(f"/mailboxes/{box.id}/delete", token=False).status_code == 302
    assert db.session.get(Mailbox, box.id) is not None


def test_an_oauth2_graph_mailbox_from_the_configuration_can_be_edited_in_the_form(app, admin, msp):
    """The form shows the OAuth2 settings (never the client secret) and keeps them when saved as shown."""
    from portal.services import commit
    from portal.services.mailboxes import save_mailbox

    box, _ = save_mailbox(msp, msp, {"address": "graph@acme.example", "protocol": "graph", "auth": "oauth2",
                                     "api_url": "http://127.0.0.1:9999/v1.0", "after_action": "move",
                                     "processed_folder": "Done",
                                     "oauth": {"provider": "microsoft", "flow": "app", "tenant": "organizations",
                                               "client_id": "app-1", "client_secret": "graph-secret-1"}},
                          keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None)
    commit()
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert re.search(r'<option selected value="graph">|<option value="graph" selected', page), page
    assert 'value="app-1"' in page and 'value="http://127.0.0.1:9999/v1.0"' in page and "graph-secret-1" not in page
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(
        msp, address="graph@acme.example", protocol="graph", host="", port="443", password="", after_action_imap="move",
        auth="oauth2", api_url="http://127.0.0.1:9999/v1.0", oauth_provider="microsoft", oauth_flow="app",
        oauth_tenant="organizations", oauth_client_id="app-1", oauth_client_secret=""))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    db.session.expire_all()
    box = db.session.get(Mailbox, box.id)
    assert (box.name, box.protocol, box.auth, box.api_url) == ("Support", "graph", "oauth2", "http://127.0.0.1:9999/v1.0")
    assert (box.after_action, box.oauth.client_id, box.password_encrypted) == ("move", "app-1", None)
    checked = admin.post(f"/mailboxes/{box.id}/check", form(msp, protocol="graph", host="", password=""))
    # Tested with the app's token, which this app cannot have: the sign-in service's words, nothing sent to Graph.
    assert "no access token for graph@acme.example: app-only access needs the customer&#39;s tenant id" \
        in checked.get_data(as_text=True)


def test_what_automatic_mail_does_is_chosen_on_the_form_shown_and_audited(admin, msp):
    admin.post("/mailboxes/new", form(msp))
    box = db.session.scalar(select(Mailbox))
    assert box.automatic_mail == "record"  # not posted: the default, record only
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert re.search(r'<option selected value="record">|<option value="record" selected', page)
    assert admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", automatic_mail="ticket")).status_code == 303
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id).automatic_mail == "ticket"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "updated"))
    assert entry.changes == {"automatic_mail": ["record", "ticket"]}
    assert admin.post(f"/mailboxes/{box.id}/edit", form(msp, password="", automatic_mail="never")).status_code == 422

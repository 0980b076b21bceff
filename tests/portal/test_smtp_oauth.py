"""An oauth2 mailbox's own outgoing server signs in with the mailbox's grant (AUTH XOAUTH2): the
real aiosmtpd of tests/smtp.py checks the token at the real authorisation server of
tests/oauth_server.py. The form, the configuration file and the sending run."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal import oauth
from portal.extensions import db
from portal.models import AuditEntry, Mailbox, Message, SmtpServer, User
from portal.models.base import utcnow
from portal.outbound import servers as outbound_svc
from portal.services import ValidationError, commit, ticket_replies
from portal.services import mailbox_oauth as oauth_svc
from portal.services.config_io import export_config
from portal.services.mailbox_tokens import app_credentials
from tests.mailfactory import email
from tests.smtp import introspecting
from workers.sending import send_due

SENDER = "support@acme.example"
CLIENT_ID, CLIENT_SECRET = "tidemark", "s3cret-client"
REDIRECT = "http://127.0.0.1/oauth/callback"


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


@pytest.fixture
def box(app, world, msp, oauth_server, smtp_server):
    """An oauth2 mailbox of Acme, connected as SENDER; the SMTP server checks tokens."""
    app.config["TIDEMARK_JOBS_SYNC"] = False  # each test runs the sender by hand
    world.client(msp, "Contoso", allow=["contoso.com"])
    smtp_server.token_check = introspecting(oauth_server.introspection_url)
    oauth_server.register_client(CLIENT_ID, CLIENT_SECRET, redirect_uris=[REDIRECT])
    mailbox = world.mailbox(msp, address=SENDER, username=SENDER, password=None, auth="oauth2", acknowledge=False,
                            oauth={"provider": "generic", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                   "token_url": f"{oauth_server.url}/token",
                                   "authorize_url": f"{oauth_server.url}/authorize", "scopes": ["mail"]})
    provider, app_creds = app_credentials(mailbox, keys(app))
    started = oauth.start_authorisation(provider, app_creds, REDIRECT, ["mail"])
    grant = oauth.finish_authorisation(provider, app_creds, started, oauth_server.approve(started.url, SENDER))
    oauth_svc.store_grant(mailbox.oauth, keys(app), access_token=grant.access_token,
                          access_expires_at=grant.expires_at, refresh_token=grant.refresh_token)
    commit()
    return mailbox


def own_server(app, mailbox, smtp_server, **values):
    outbound_svc.save_outgoing_server(mailbox, {"host": smtp_server.host, "port": smtp_server.port,
                                                "security": "none", "auth": "oauth2", **values},
                                      keys=keys(app), actor=None)
    commit()


def reply_to_a_ticket(world, msp, mailbox, text="Coming over now."):
    created = world.deliver(mailbox, email(sender="alice@contoso.com", to=[SENDER]))
    tech = world.user(msp, "tech@acme.example", role="technician")
    ticket_replies.reply(created.ticket, db.session.get(User, tech.id), to="alice@contoso.com", cc="", text=text)
    commit()


def test_a_reply_goes_out_through_xoauth2_and_arrives(app, world, msp, box, smtp_server, oauth_server):
    own_server(app, box, smtp_server)
    reply_to_a_ticket(world, msp, box)
    assert send_due() == {"sent": 1}
    received = smtp_server.last()
    assert received.login == SENDER and received.rcpt_tos == ["alice@contoso.com"]
    assert smtp_server.auth_attempts == [(SENDER, True)]
    assert "Coming over now." in received.message.get_body(("plain",)).get_content()
    assert received.message["From"].addresses[0].addr_spec == SENDER


def test_a_stale_token_is_refreshed_before_sending(app, world, msp, box, smtp_server, oauth_server):
    own_server(app, box, smtp_server)
    old = oauth_svc.access_token_of(box.oauth, keys(app))
    oauth_server.expire(old)
    box.oauth.access_token_expires_at = utcnow()
    commit()
    reply_to_a_ticket(world, msp, box)
    assert send_due() == {"sent": 1}
    assert oauth_server.token_requests[-1]["grant_type"] == "refresh_token"
    assert smtp_server.auth_attempts == [(SENDER, True)]
    db.session.expire_all()
    assert oauth_svc.access_token_of(db.session.get(Mailbox, box.id).oauth, keys(app)) != old


def test_a_revoked_grant_fails_the_reply_in_plain_words_and_needs_reconnecting(app, world, msp, box, smtp_server,
                                                                               oauth_server):
    own_server(app, box, smtp_server)
    oauth_server.revoke_grant(oauth_svc.access_token_of(box.oauth, keys(app)))
    box.oauth.access_token_expires_at = utcnow()
    commit()
    reply_to_a_ticket(world, msp, box)
    assert send_due() == {"failed": 1}
    reply = db.session.scalar(select(Message).where(Message.direction == "out"))
    assert "failed: the sign-in service refused the OAuth2 grant of support@acme.example" in reply.delivery_note
    assert "(invalid_grant)" in reply.delivery_note
    assert smtp_server.messages == [] and smtp_server.auth_attempts == []
    assert db.session.get(Mailbox, box.id).oauth.state == "reconnect needed"


def test_the_grant_is_for_an_oauth2_mailboxs_own_server_only(app, world, msp, box, smtp_server):
    with pytest.raises(ValidationError) as gateway:
        outbound_svc.save_smtp_server({"host": "smtp.acme.example", "auth": "oauth2"}, keys=keys(app))
    assert "The default gateway has no OAuth2 grant" in gateway.value.errors["auth"][0]
    plain = world.mailbox(msp, address="plain@acme.example")
    with pytest.raises(ValidationError) as password_box:
        outbound_svc.save_smtp_server({"host": "smtp.acme.example", "auth": "oauth2"}, keys=keys(app), mailbox=plain)
    assert "Only the outgoing server of a mailbox that signs in with OAuth2" in password_box.value.errors["auth"][0]
    with pytest.raises(ValidationError) as both:
        own_server(app, box, smtp_server, password="pw")
    assert "leave the password empty" in both.value.errors["password"][0]


def test_switching_to_the_grant_forgets_the_password(app, world, msp, box, smtp_server):
    own_server(app, box, smtp_server, auth="password", username="mailer", password="old-secret")
    server = outbound_svc.own_server(box)
    assert server.password_encrypted is not None and server.auth == "password"
    own_server(app, box, smtp_server)
    assert server.password_encrypted is None and server.auth == "oauth2"
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "outgoing server changed").order_by(AuditEntry.id)).all()[-1]
    assert entry.changes["outgoing auth"] == ["password", "oauth2"]
    assert entry.changes["outgoing password"] == ["(set)", None]


def test_the_configuration_file_names_it_under_the_mailboxs_outgoing_server(app, world, msp, box, smtp_server):
    own_server(app, box, smtp_server)
    exported = export_config(keys=keys(app), msp_id=msp.id)
    item = next(m for m in exported["mailboxes"] if m["address"] == SENDER)
    assert item["outgoing"]["auth"] == "oauth2" and "password" not in item["outgoing"]


def test_the_form_sets_it_and_the_page_says_so(app, world, msp, box, smtp_server, admin):
    resp = admin.post(f"/mailboxes/{box.id}/outgoing", {
        "host": smtp_server.host, "port": str(smtp_server.port), "security": "none", "auth": "oauth2",
        "username": "", "timeout": "10"})
    assert resp.status_code == 303
    server = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == box.id))
    assert server.auth == "oauth2" and server.username is None
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert f"the mailbox's OAuth2 grant (XOAUTH2) as {SENDER}" in page
    form = admin.get(f"/mailboxes/{box.id}/outgoing").get_data(as_text=True)
    assert '<option selected value="oauth2">' in form
    result = admin.post(f"/mailboxes/{box.id}/outgoing/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Sent to qa@acme.example" in result.get_data(as_text=True)
    assert smtp_server.auth_attempts == [(SENDER, True)]
    assert db.session.scalar(select(AuditEntry.action).where(AuditEntry.action.like("test email (%"))) == \
        "test email (OAuth2 grant)"


OUTGOING_YAML = """
clients:
  - name: Contoso
mailboxes:
  - address: helpdesk@contoso.com
    client: Contoso
    auth: oauth2
    host: outlook.office365.com
    username: helpdesk@contoso.com
    oauth: {provider: microsoft, flow: app, tenant: contoso.onmicrosoft.com, client_id: app-1, client_secret: s3cr3t}
    outgoing: {host: smtp.office365.com, port: 587, security: starttls, auth: oauth2}
"""


def test_the_configuration_file_imports_it_and_a_second_import_changes_nothing(app, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OUTGOING_YAML)
    first = app.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert first.exit_code == 0, first.output
    server = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_not(None)))
    assert (server.host, server.auth, server.password_encrypted) == ("smtp.office365.com", "oauth2", None)
    again = app.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert "0 created, 0 updated" in again.output, again.output
    path.write_text(OUTGOING_YAML.replace("auth: oauth2}", "auth: oauth2, password: pw}"))
    refused = app.test_cli_runner().invoke(args=["config", "import", str(path)])
    assert refused.exit_code != 0 and "leave the password empty" in refused.output

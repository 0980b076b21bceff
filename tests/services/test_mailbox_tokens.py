"""An oauth2 mailbox fetches with its grant: the real authorisation server of tests/oauth_server.py
issues and refreshes the tokens, the real Dovecot of tests/dovecot.py checks them (introspection),
and portal.inbound.fetch.run_fetch turns the mail into tickets."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from portal import oauth
from portal.extensions import db
from portal.inbound.fetch import run_fetch
from portal.models import AuditEntry, Mailbox, Ticket
from portal.models.base import utcnow
from portal.services import ValidationError, commit
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailbox_tokens import access_token, app_credentials, connect_app
from portal.services.mailboxes import check_connection, probe_settings, save_mailbox, set_status
from portal.transport import open_session
from portal.transport.base import TransportError
from tests.mailfactory import email
from tests.oauth_server import MICROSOFT_BAD_SECRET

CLIENT_ID, CLIENT_SECRET = "tidemark", "s3cret-client"
REDIRECT = "http://127.0.0.1/oauth/callback"


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


@pytest.fixture
def msp(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return msp


def oauth_mailbox(world, msp, server, user, oauth_server, protocol="imap", flow="delegated", **values):
    """A draft mailbox of `user` on the token-checking Dovecot, signing in through the test
    authorisation server as a generic provider."""
    settings = {"provider": "generic", "flow": flow, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "token_url": f"{oauth_server.url}/token", "authorize_url": f"{oauth_server.url}/authorize",
                "scopes": ["mail"]}
    values.setdefault("after_action", "seen" if protocol == "imap" else "delete")
    return world.mailbox(msp, address="support@acme.example", protocol=protocol, security="none", host="127.0.0.1",
                         port=server.port(protocol, "none"), username=user.name, password=None, auth="oauth2",
                         oauth=settings, **values)


def connect(app, mailbox, oauth_server, username):
    """What the Connect button does: sign in with PKCE, consent on the server's page, store the grant."""
    oauth_server.register_client(CLIENT_ID, CLIENT_SECRET, redirect_uris=[REDIRECT])
    provider, app_creds = app_credentials(mailbox, keys(app))
    started = oauth.start_authorisation(provider, app_creds, REDIRECT, ["mail"], login_hint=username)
    grant = oauth.finish_authorisation(provider, app_creds, started, oauth_server.approve(started.url, username))
    oauth_svc.store_grant(mailbox.oauth, keys(app), access_token=grant.access_token,
                          access_expires_at=grant.expires_at, refresh_token=grant.refresh_token, account=grant.account)
    commit()
    return grant


def activate(app, mailbox):
    # Activation needs a successful test of the saved settings; these tests try the grant by fetching.
    mailbox.last_test_at, mailbox.last_test_ok = utcnow(), True
    set_status(mailbox, "active", keys=keys(app), actor=None)
    commit()


def fetch(app, mailbox):
    return run_fetch(mailbox, open_session=open_session, keys=keys(app), secret=b"s", commit=commit)


def tickets():
    return db.session.scalar(select(func.count()).select_from(Ticket))


# The test authorisation server logs in this process too (Werkzeug, Authlib's server side): its
# own words about the requests it received are not the portal's.
SERVER_LOGGERS = ("werkzeug", "authlib.oauth2.rfc6749.grants", "authlib.oauth2.rfc6749.authorization_server")


def portal_log(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records if not r.name.startswith(SERVER_LOGGERS))


def refused_by_server(oauth_server, refresh_token) -> bool:
    answer = requests.post(f"{oauth_server.url}/token", auth=(CLIENT_ID, CLIENT_SECRET), timeout=5,
                           data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    return answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_an_oauth2_mailbox_fetches_with_its_grant(app, world, msp, oauth_dovecot, oauth_server, redis, protocol):
    user = oauth_dovecot.new_user("ana")
    for i in range(2):
        oauth_dovecot.deliver(user, email(subject=f"case {i}"))
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, protocol)
    connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    report = fetch(app, mailbox)
    assert report.error is None and report.fetched == 2 and tickets() == 2
    assert sorted(t.subject for t in db.session.scalars(select(Ticket))) == ["case 0", "case 1"]
    assert oauth_server.token_requests[-1]["grant_type"] == "authorization_code"  # a fresh token: no refresh
    db.session.refresh(mailbox)
    assert mailbox.failure_count == 0 and mailbox.last_success_at is not None


def test_a_token_near_expiry_is_refreshed_first_and_the_rotated_refresh_token_stored(
        app, world, msp, oauth_dovecot, oauth_server, redis):
    user = oauth_dovecot.new_user("ana")
    oauth_dovecot.deliver(user, email(subject="after the refresh"))
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    first = connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    # Four minutes left: within the five the refresh keeps in hand. The server no longer takes it.
    mailbox.oauth.access_token_expires_at = utcnow() + timedelta(minutes=4)
    commit()
    oauth_server.expire(first.access_token)
    report = fetch(app, mailbox)
    assert report.error is None and tickets() == 1
    assert [r["grant_type"] for r in oauth_server.token_requests] == ["authorization_code", "refresh_token"]
    db.session.expire_all()
    row = db.session.get(Mailbox, mailbox.id).oauth
    stored = oauth_svc.refresh_token_of(row, keys(app))
    assert stored != first.refresh_token and oauth_server.by_refresh[stored].refresh_revoked is False
    assert refused_by_server(oauth_server, first.refresh_token)  # rotated away: the old one is dead
    assert row.access_token_expires_at > utcnow() + timedelta(minutes=50) and row.state == "connected"
    # The next poll uses the stored token as it is: no further token request.
    oauth_dovecot.deliver(user, email(subject="second poll"))
    asked = len(oauth_server.token_requests)
    assert fetch(app, mailbox).error is None and tickets() == 2
    assert len(oauth_server.token_requests) == asked


def test_a_revoked_grant_needs_reconnecting_and_is_not_tried_again(
        app, world, msp, oauth_dovecot, oauth_server, redis, caplog):
    user = oauth_dovecot.new_user("ana")
    oauth_dovecot.deliver(user, email())
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    grant = connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    oauth_server.revoke_grant(grant.access_token)
    mailbox.oauth.access_token_expires_at = utcnow() - timedelta(seconds=1)
    commit()
    caplog.set_level(logging.DEBUG)
    report = fetch(app, mailbox)
    assert "portal.oauth.http OAuth: 127.0.0.1 refused a request: invalid_grant" in portal_log(caplog)
    db.session.expire_all()
    mailbox = db.session.get(Mailbox, mailbox.id)
    row = mailbox.oauth
    assert row.state == "reconnect needed" and "(invalid_grant)" in row.state_reason
    assert "reconnect the mailbox" in row.state_reason
    assert row.refresh_token_encrypted is None and row.access_token_encrypted is None
    assert report.error == mailbox.last_error and "invalid_grant" in mailbox.last_error
    assert mailbox.failure_count == 1 and tickets() == 0
    assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "OAuth2 reconnect needed")) == 1
    for secret in (grant.access_token, grant.refresh_token, CLIENT_SECRET):
        assert secret not in portal_log(caplog) and secret not in mailbox.last_error and secret not in row.state_reason
    asked = len(oauth_server.token_requests)
    mailbox.next_poll_at = None
    commit()
    again = fetch(app, mailbox)
    assert len(oauth_server.token_requests) == asked  # a dead grant is not sent again
    assert "needs reconnecting" in again.error and "invalid_grant" in again.error


def test_a_wrong_client_secret_needs_reconnecting_with_the_providers_code(app, world, msp, oauth_dovecot,
                                                                         oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    connect(app, mailbox, oauth_server, user.name)
    mailbox.oauth.access_token_expires_at = utcnow()
    oauth_server.fail_next(MICROSOFT_BAD_SECRET, 401)
    with pytest.raises(TransportError) as caught:
        access_token(mailbox, keys(app))
    assert caught.value.kind == "auth" and not caught.value.transient
    assert "refused the app's client id or secret" in caught.value.message and "(invalid_client)" in caught.value.message
    assert mailbox.oauth.state == "reconnect needed"


def test_a_sign_in_service_that_is_down_is_a_transient_failure_and_keeps_the_grant(app, world, msp, oauth_dovecot,
                                                                                  oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    connect(app, mailbox, oauth_server, user.name)
    mailbox.oauth.access_token_expires_at = utcnow()
    oauth_server.fail_next({"error": "temporarily_unavailable"}, 503)
    with pytest.raises(TransportError) as caught:
        access_token(mailbox, keys(app))
    assert caught.value.transient and caught.value.kind == "connect"
    assert mailbox.oauth.state == "connected" and mailbox.oauth.refresh_token_encrypted is not None


def test_the_app_flow_gets_a_token_by_client_credentials_without_a_refresh_token(
        app, world, msp, oauth_dovecot, oauth_server, redis):
    user = oauth_dovecot.new_user("app")
    oauth_dovecot.deliver(user, email(subject="for the app"))
    oauth_server.register_client(CLIENT_ID, CLIENT_SECRET, grant_types=["client_credentials"],
                                 app_username=user.name)
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, flow="app")
    token = access_token(mailbox, keys(app))
    commit()
    assert oauth_server.token_requests[-1]["grant_type"] == "client_credentials"
    row = mailbox.oauth
    assert row.state == "connected" and row.refresh_token_encrypted is None
    assert oauth_svc.access_token_of(row, keys(app)) == token and oauth_server.token(token).username is None
    activate(app, mailbox)
    assert fetch(app, mailbox).error is None and tickets() == 1
    assert len(oauth_server.token_requests) == 1


def test_a_mailbox_not_connected_says_so_and_sends_nothing(app, world, msp, oauth_dovecot, oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    result = check_connection(mailbox, keys(app))
    assert not result.ok and result.message == f"{mailbox.address}: {oauth_svc.NOT_CONNECTED}"
    assert mailbox.last_test_ok is False and oauth_server.token_requests == []


def test_test_connection_signs_in_with_a_fresh_token(app, world, msp, oauth_dovecot, oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, protocol="pop3")
    connect(app, mailbox, oauth_server, user.name)
    mailbox.oauth.access_token_expires_at = utcnow()  # stale: refreshed before the test
    result = check_connection(mailbox, keys(app))
    assert result.ok, result.message
    assert result.message.startswith(f"Connected to 127.0.0.1:{oauth_dovecot.pop3_port} without encryption as {user.name}")
    assert oauth_server.token_requests[-1]["grant_type"] == "refresh_token"
    assert db.session.scalar(select(AuditEntry.action).where(AuditEntry.action.like("connection test%"))) == \
        "connection test (OAuth2 grant)"


def test_the_form_test_uses_the_grant_for_the_saved_server_only(app, world, msp, oauth_dovecot, oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    connect(app, mailbox, oauth_server, user.name)
    typed = {"protocol": "imap", "security": "none", "host": "127.0.0.1", "port": oauth_dovecot.imap_port,
             "username": user.name}
    result = probe_settings(typed, keys(app), mailbox=mailbox)
    assert result.ok, result.message
    with pytest.raises(ValidationError) as refused:
        probe_settings({**typed, "port": oauth_dovecot.imaps_port}, keys(app), mailbox=mailbox)
    assert "save the settings first" in str(refused.value.errors)
    with pytest.raises(ValidationError) as new:
        probe_settings({**typed, "auth": "oauth2"}, keys(app), mailbox=None)
    assert oauth_svc.NOT_CONNECTED in new.value.errors[""]


def test_a_rotated_refresh_token_is_kept_when_the_login_after_it_fails(app, world, msp, oauth_dovecot, oauth_server):
    """The refresh is committed before the login: a failed login's rollback must not bring back
    the refresh token the provider has just rotated away."""
    user, other = oauth_dovecot.new_user("ana"), oauth_dovecot.new_user("bob")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    first = connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    mailbox.username = other.name  # the token is ana's: Dovecot refuses it for bob
    mailbox.oauth.access_token_expires_at = utcnow()
    commit()
    report = fetch(app, mailbox)
    assert "the server refused the access token" in report.error
    db.session.expire_all()
    row = db.session.get(Mailbox, mailbox.id).oauth
    stored = oauth_svc.refresh_token_of(row, keys(app))
    assert stored != first.refresh_token and stored in oauth_server.by_refresh and row.state == "connected"


def test_with_several_msps_a_job_does_not_send_the_grant_to_loopback(app, world, msp, oauth_dovecot, oauth_server,
                                                                     redis):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    connect(app, mailbox, oauth_server, user.name)
    activate(app, mailbox)
    world.msp("Beta MSP")  # now the address rule holds for jobs
    mailbox.oauth.access_token_expires_at = utcnow()
    commit()
    asked = len(oauth_server.token_requests)
    report = fetch(app, mailbox)
    assert report.error == (f"no access token for {mailbox.address}: 127.0.0.1 cannot be used as a server here: it is "
                            "an address of this machine itself (loopback). If this server is meant to be reached, ask "
                            "the operator of this installation to allow its network.")
    assert len(oauth_server.token_requests) == asked
    db.session.refresh(mailbox.oauth)
    assert mailbox.oauth.state == "connected"  # an admin's setting to fix, not a dead grant


def test_two_jobs_refreshing_at_once_spend_the_refresh_token_once(app, world, msp, oauth_dovecot, oauth_server):
    """A fetch and a send find the token stale together: the second waits on the grant and takes
    the token the first stored, instead of a refresh token the first has rotated away."""
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    connect(app, mailbox, oauth_server, user.name)
    mailbox.oauth.access_token_expires_at = utcnow()
    commit()
    mailbox_id, tokens, errors = mailbox.id, [], []
    start = threading.Barrier(2)

    def job():
        with app.app_context():
            try:
                box = db.session.get(Mailbox, mailbox_id)
                start.wait(timeout=10)
                tokens.append(access_token(box, keys(app)))
                commit()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(tokens) == 2 and tokens[0] == tokens[1]
    assert [r["grant_type"] for r in oauth_server.token_requests].count("refresh_token") == 1
    db.session.expire_all()
    assert db.session.get(Mailbox, mailbox_id).oauth.state == "connected"


def test_flask_mail_test_connection_signs_in_with_the_grant(app, world, msp, oauth_dovecot, oauth_server):
    user = oauth_dovecot.new_user("ana")
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["mail", "test-connection", mailbox.address])
    assert refused.exit_code == 1 and oauth_svc.NOT_CONNECTED in refused.output
    connect(app, mailbox, oauth_server, user.name)
    result = runner.invoke(args=["mail", "test-connection", mailbox.address])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Connected to 127.0.0.1:{oauth_dovecot.imap_port} without encryption as {user.name}")


def test_a_shared_mailbox_is_fetched_with_the_connected_users_grant(app, world, msp, oauth_dovecot, oauth_server,
                                                                    redis):
    shared, ana = oauth_dovecot.new_user("helpdesk"), oauth_dovecot.new_user("ana")
    oauth_dovecot.deliver(shared, email(subject="to the shared mailbox"))
    oauth_dovecot.grant_mailbox(shared, ana.name)
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, ana, oauth_server, shared_mailbox=shared.name)
    connect(app, mailbox, oauth_server, ana.name)
    activate(app, mailbox)
    report = fetch(app, mailbox)
    assert report.error is None and report.fetched == 1
    assert db.session.scalar(select(Ticket.subject)) == "to the shared mailbox"


def test_an_app_mailbox_connects_again_once_its_secret_is_mended(app, world, msp, oauth_dovecot, oauth_server):
    user = oauth_dovecot.new_user("app")
    oauth_server.register_client(CLIENT_ID, "the-right-secret", grant_types=["client_credentials"],
                                 app_username=user.name)
    mailbox = oauth_mailbox(world, msp, oauth_dovecot, user, oauth_server, flow="app")
    with pytest.raises(TransportError) as wrong:
        access_token(mailbox, keys(app))
    assert "(invalid_client)" in wrong.value.message and mailbox.oauth.state == "reconnect needed"
    commit()
    save_mailbox(msp, msp, {"oauth": {"client_secret": "the-right-secret"}}, keys=keys(app), actor=None,
                 mailbox=mailbox)
    with pytest.raises(TransportError, match="needs reconnecting"):
        access_token(mailbox, keys(app))  # not tried again by itself
    asked = len(oauth_server.token_requests)
    admin = world.user(msp, "ana@acme.example")
    token = connect_app(mailbox, keys(app), actor=admin)
    commit()
    assert len(oauth_server.token_requests) == asked + 1 and oauth_server.token(token) is not None
    assert mailbox.oauth.state == "connected" and mailbox.oauth.state_reason is None
    assert access_token(mailbox, keys(app)) == token
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "OAuth2 connected").order_by(AuditEntry.id)).all()[-1]
    assert entry.actor_id == admin.id

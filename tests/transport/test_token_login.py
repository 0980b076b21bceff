"""IMAP and POP3 with an OAuth2 access token against the real Dovecot of tests/dovecot.py, the
token issued and checked (introspection) by the real authorisation server of tests/oauth_server.py."""

from __future__ import annotations

import imaplib
import logging
import tempfile
import time
from pathlib import Path

import pytest

from portal.transport import ImapSession, ServerSettings, TransportError, open_session, sasl
from portal.transport.base import translate
from tests.dovecot import DovecotServer
from tests.transport.exchange_imap import ExchangeImap
from tests.transport.helpers import app_token, delegated_token, make_message, sha

SECURITIES = ["none", "starttls", "ssl"]


def _token_settings(server, user, protocol, token, security="none", **overrides) -> ServerSettings:
    return server.settings(user, protocol, security, password="", token=token, **overrides)


def _fetch_all(session) -> list[bytes]:
    if isinstance(session, ImapSession):
        session.select("INBOX", readonly=True)
        return [m.raw for m in session.fetch(session.uids_after(0))]
    return [session.retrieve(number) for number, _, _ in session.listing()]


def _logged(server, text: str) -> str:
    """Dovecot's log once it holds `text` (its log process writes a moment after the login)."""
    deadline = time.monotonic() + 10
    while True:
        log = (server.root / "dovecot.log").read_text()
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


@pytest.fixture
def mailbox(oauth_dovecot, oauth_server):
    """A user with two messages and an access token of its own."""
    user = oauth_dovecot.new_user("ana")
    raws = [make_message(i) for i in range(2)]
    oauth_dovecot.deliver_many(user, raws)
    return user, raws, delegated_token(oauth_server, user.name)


# --- logging in and fetching ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("security", SECURITIES)
def test_logs_in_with_the_token_and_fetches_exact_bytes(oauth_dovecot, mailbox, protocol, security, caplog):
    user, raws, token = mailbox
    caplog.set_level(logging.DEBUG)
    with open_session(_token_settings(oauth_dovecot, user, protocol, token, security)) as session:
        assert [sha(r) for r in _fetch_all(session)] == [sha(r) for r in raws]
    log = _logged(oauth_dovecot, f"Login: user=<{user.name}>, method=XOAUTH2")
    assert f"Login: user=<{user.name}>, method=XOAUTH2" in log
    assert token not in caplog.text and token not in log


def test_the_token_is_hidden_and_never_beside_a_password(oauth_dovecot, mailbox):
    user, _, token = mailbox
    settings = _token_settings(oauth_dovecot, user, "imap", token)
    assert token not in repr(settings) and settings.token_user == user.name
    with pytest.raises(ValueError, match="not both"):
        oauth_dovecot.settings(user, "imap", token=token)  # the user's password is filled in too


def test_password_login_still_works_on_the_same_server(oauth_dovecot, mailbox):
    user, raws, _ = mailbox
    with open_session(oauth_dovecot.settings(user, "pop3")) as session:
        assert len(_fetch_all(session)) == len(raws)


# --- refused tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_dead_token_is_refused_in_plain_words(oauth_dovecot, oauth_server, mailbox, protocol, how, caplog):
    user, _, token = mailbox
    (oauth_server.revoke_grant if how == "revoked" else oauth_server.expire)(token)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransportError) as caught:
        open_session(_token_settings(oauth_dovecot, user, protocol, token))
    error = caught.value
    assert error.kind == "auth" and not error.transient
    assert error.message.startswith(
        f"the server refused the access token for {user.name}: it may have expired or been revoked; "
        "reconnect the mailbox (the server said ")
    assert token not in error.message and token not in caplog.text


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_the_servers_json_challenge_is_read_and_answered_empty(oauth_dovecot, oauth_server, mailbox, protocol):
    """Dovecot answers a bad token with '+ <base64 JSON>' first and waits for an empty line; the
    JSON's words reach the message (imapclient's oauth2_login would send the token again)."""
    user, _, token = mailbox
    oauth_server.revoke_grant(token)
    with pytest.raises(TransportError) as caught:
        open_session(_token_settings(oauth_dovecot, user, protocol, token))
    assert "(status 401, schemes bearer, scope mail)" in caught.value.message
    assert "Authentication failed" in caught.value.message


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_server_without_token_login_says_so(dovecot, mail_user, protocol):
    """The password-only Dovecot offers neither AUTH=XOAUTH2 nor OAUTHBEARER."""
    with pytest.raises(TransportError) as caught:
        open_session(_token_settings(dovecot, mail_user, protocol, "eyJ0eXAiOiJKV1Qi.unused"))
    assert caught.value.kind == "auth" and not caught.value.transient
    assert caught.value.message == sasl.missing_mechanism(dovecot.settings(mail_user, protocol).address, protocol)


# --- shared mailboxes: user= is the mailbox, the token someone else's ----------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_shared_mailbox_opens_with_a_granted_users_token(oauth_dovecot, oauth_server, protocol):
    shared, ana = oauth_dovecot.new_user("helpdesk"), oauth_dovecot.new_user("ana")
    raw = make_message(7)
    oauth_dovecot.deliver(shared, raw)
    token = delegated_token(oauth_server, ana.name)
    settings = _token_settings(oauth_dovecot, ana, protocol, token, auth_identity=shared.name)
    assert settings.token_user == shared.name
    with pytest.raises(TransportError) as caught:  # not granted yet: refused
        open_session(settings)
    assert caught.value.kind == "auth" and f"for {ana.name} (mailbox {shared.name})" in caught.value.message
    oauth_dovecot.grant_mailbox(shared, ana.name)
    with open_session(settings) as session:
        assert [sha(r) for r in _fetch_all(session)] == [sha(raw)]
    assert f"Login: user=<{shared.name}>, method=XOAUTH2" in _logged(oauth_dovecot, f"Login: user=<{shared.name}>")


def test_shared_mailbox_opens_with_the_apps_token(oauth_dovecot, oauth_server):
    """App-only access (client credentials), as with Exchange's application permission."""
    shared = oauth_dovecot.new_user("billing")
    oauth_dovecot.deliver(shared, make_message(1))
    token = app_token(oauth_server, "tidemark-app@contoso.example")
    oauth_dovecot.grant_mailbox(shared, "tidemark-app@contoso.example")
    settings = ServerSettings(protocol="imap", host=oauth_dovecot.host, port=oauth_dovecot.imap_port,
                              security="none", username=shared.name, token=token, timeout=10)
    with ImapSession(settings) as session:
        assert session.select("INBOX", readonly=True).exists == 1


# --- OAUTHBEARER, when a server offers only that ------------------------------------------------


@pytest.fixture(scope="module")
def oauthbearer_dovecot(oauth_server_session):
    root = Path(tempfile.mkdtemp(prefix="tmdb-"))
    root.chmod(0o755)
    server = DovecotServer(root, oauth_server_session.introspection_url, token_mechanisms="oauthbearer").start()
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_oauthbearer_when_xoauth2_is_not_offered(oauthbearer_dovecot, oauth_server, protocol):
    user = oauthbearer_dovecot.new_user("ana")
    oauthbearer_dovecot.deliver(user, make_message(3))
    token = delegated_token(oauth_server, user.name)
    with open_session(_token_settings(oauthbearer_dovecot, user, protocol, token)) as session:
        assert len(_fetch_all(session)) == 1
    expected = f"Login: user=<{user.name}>, method=OAUTHBEARER"
    assert expected in _logged(oauthbearer_dovecot, expected)


# --- Exchange Online's answers -------------------------------------------------------------------


def test_authenticated_but_not_connected_names_the_likely_causes(caplog):
    """Exchange accepts the token, then refuses SELECT when IMAP is off for the mailbox or the app
    lacks permission on it (a loopback server with Exchange's answers)."""
    token = "eyJ0eXAiOiJKV1Qi.the-secret-part"
    caplog.set_level(logging.DEBUG)
    with ExchangeImap() as exchange:
        settings = ServerSettings(protocol="imap", host="127.0.0.1", port=exchange.port, security="none",
                                  username="ana@contoso.example", auth_identity="helpdesk@contoso.example",
                                  token=token, timeout=5)
        with ImapSession(settings) as session:
            with pytest.raises(TransportError) as caught:
                session.select("INBOX")
    assert exchange.logins == ["user=helpdesk@contoso.example"]  # user= names the shared mailbox
    error = caught.value
    assert error.kind == "auth" and not error.transient
    assert error.message.startswith(f"127.0.0.1:{exchange.port} accepted the access token for ana@contoso.example "
                                    "(mailbox helpdesk@contoso.example) but will not open the mailbox: IMAP or "
                                    "POP is disabled for this mailbox")
    assert "the app lacks permission on it" in error.message
    assert token not in caplog.text


def test_not_connected_on_any_later_command_is_translated_too():
    settings = ServerSettings(protocol="imap", host="outlook.office365.com", port=993, security="ssl",
                              username="ana@contoso.example", token="eyJ0eXAiOiJKV1Qi.secret")
    said = imaplib.IMAP4.error("list failed: b'User is authenticated but not connected.'")
    error = translate(said, settings, "listing the folders")
    assert error.kind == "auth" and "will not open the mailbox" in error.message and "secret" not in error.message

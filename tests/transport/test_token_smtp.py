"""SMTP with an OAuth2 access token (AUTH XOAUTH2) against the real aiosmtpd of tests/smtp.py, the
token issued and checked (introspection) by the real authorisation server of tests/oauth_server.py."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from portal.transport.smtp import SmtpError, SmtpSettings, check_connection, send
from tests.smtp import SMTP_USER, introspecting
from tests.dovecot import unused_port
from tests.transport.helpers import app_token, delegated_token

SENDER = "helpdesk@contoso.example"


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "customer@example.org"
    message["Subject"] = "Ticket #12 updated"
    message.set_content("Your printer is fixed.\n")
    return message


@pytest.fixture
def token(smtp_server, oauth_server) -> str:
    """An access token of SENDER; the SMTP server checks tokens at the authorisation server."""
    smtp_server.token_check = introspecting(oauth_server.introspection_url)
    return delegated_token(oauth_server, SENDER)


def _token_settings(server, token: str, security: str = "none", **overrides) -> SmtpSettings:
    return server.settings(security, **{"username": SENDER, "token": token, **overrides})


def test_token_is_neither_in_repr_nor_next_to_a_password():
    settings = SmtpSettings(host="smtp.example", username=SENDER, token="tok-SECRET")
    assert "tok-SECRET" not in repr(settings)
    with pytest.raises(ValueError, match="not both"):
        SmtpSettings(host="smtp.example", username=SENDER, password="pw", token="tok")
    with pytest.raises(ValueError, match="username"):
        SmtpSettings(host="smtp.example", token="tok")


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_sends_with_a_token(smtp_server, token, security):
    result = send(_token_settings(smtp_server, token, security), _message())
    received = smtp_server.last()
    assert received.login == SENDER and received.rcpt_tos == ["customer@example.org"]
    assert received.tls == (security != "none")
    assert result.accepted == ("customer@example.org",)
    assert smtp_server.auth_attempts == [(SENDER, True)]


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_dead_token_is_an_auth_error_in_plain_words(smtp_server, oauth_server, token, how, caplog):
    (oauth_server.revoke_grant if how == "revoked" else oauth_server.expire)(token)
    caplog.set_level("DEBUG")
    with pytest.raises(SmtpError) as caught:
        send(_token_settings(smtp_server, token), _message())
    error = caught.value
    assert error.kind == "auth" and not error.temporary and error.code == 535
    assert error.message.startswith(
        f"the server refused the access token for {SENDER}: it may have expired or been revoked; "
        "reconnect the mailbox (the server said 535 5.7.8")
    # The JSON challenge the server sent first is read, not answered with the token again.
    assert "status 400" in error.message and "schemes Bearer" in error.message
    assert smtp_server.messages == [] and smtp_server.auth_attempts == [(SENDER, False)]
    assert token not in caplog.text and token not in repr(error)


def test_a_token_for_another_mailbox_is_refused(smtp_server, oauth_server, token):
    """aiosmtpd, like Dovecot's oauth2 passdb, wants the token to belong to user=."""
    with pytest.raises(SmtpError) as caught:
        send(_token_settings(smtp_server, token, username="billing@contoso.example"), _message())
    assert caught.value.kind == "auth" and smtp_server.auth_attempts == [("billing@contoso.example", False)]


def test_shared_mailbox_sends_with_a_granted_users_or_the_apps_token(smtp_server, oauth_server):
    """user= is the shared mailbox that sends; the token is a delegate's, then the app's."""
    shared = "billing@contoso.example"
    smtp_server.token_check = introspecting(oauth_server.introspection_url,
                                            grants={shared: {SENDER, "tidemark-app@contoso.example"}})
    for token in (delegated_token(oauth_server, SENDER), app_token(oauth_server, "tidemark-app@contoso.example")):
        send(_token_settings(smtp_server, token, username=shared), _message())
        assert smtp_server.last().login == shared
    outsider = delegated_token(oauth_server, "mallory@contoso.example")
    with pytest.raises(SmtpError) as caught:
        send(_token_settings(smtp_server, outsider, username=shared), _message())
    assert caught.value.kind == "auth" and len(smtp_server.messages) == 2


def test_check_connection_logs_in_with_the_token(smtp_server, token):
    words = check_connection(_token_settings(smtp_server, token, "starttls"))
    assert words.endswith(f"logged in as {SENDER}") and smtp_server.messages == []


def test_server_without_xoauth2_is_named(smtp_server):
    """A server offering only passwords: the error says what is missing and what it offers."""
    port = unused_port()
    controller = Controller(object(), hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=lambda *a: None, server_hostname="plain.test.example")
    controller.start()
    try:
        with pytest.raises(SmtpError) as caught:
            send(SmtpSettings(host="127.0.0.1", port=port, security="none", username=SENDER,
                              token="eyJ0eXAi.x7Yq", timeout=5), _message())
    finally:
        controller.stop()
    assert caught.value.kind == "auth"
    assert "does not offer login with an access token (AUTH=XOAUTH2 or OAUTHBEARER)" in caught.value.message
    assert "it offers: LOGIN PLAIN" in caught.value.message


def test_password_login_still_works_beside_xoauth2(smtp_server):
    send(smtp_server.settings("none", login=True), _message())
    assert smtp_server.last().login == SMTP_USER


def test_microsofts_smtp_auth_disabled_is_named(smtp_server, token):
    """Exchange Online refuses a good token with 5.7.139 when SMTP AUTH is off for the mailbox."""
    smtp_server.token_check = lambda user, token: ("535 5.7.139 Authentication unsuccessful, "
                                                   "SmtpClientAuthentication is disabled for the Tenant.")
    with pytest.raises(SmtpError) as caught:
        send(_token_settings(smtp_server, token), _message())
    message = caught.value.message
    assert caught.value.kind == "auth" and caught.value.code == 535
    assert "SMTP AUTH is disabled for this mailbox or for the whole tenant (Microsoft 5.7.139)" in message
    assert f"Set-CASMailbox -Identity {SENDER} -SmtpClientAuthenticationDisabled $false" in message
    assert "expired" not in message

"""portal.oauth end to end against the local authorisation server (tests/oauth_server.py)."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from portal import oauth
from portal.oauth import AppCredentials, OAuthError
from tests.oauth_server import (
    GOOGLE_INVALID_GRANT,
    MICROSOFT_APP_NOT_IN_TENANT,
    MICROSOFT_BAD_SECRET,
    MICROSOFT_CONSENT_MISSING,
    MICROSOFT_EXPIRED_SECRET,
    MICROSOFT_WRONG_TENANT,
)

CALLBACK = "http://127.0.0.1:5000/mailboxes/oauth/callback"
SECRET = "s3cret-client-Value~1"
APP = AppCredentials("tidemark-app", SECRET)
IMAP_SMTP = ["imap", "smtp"]


@pytest.fixture
def server(oauth_server):
    oauth_server.register_client(
        "tidemark-app", SECRET, redirect_uris=[CALLBACK],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
        app_username="helpdesk@contoso.example")
    return oauth_server


def generic(server):
    return oauth.generic(f"{server.url}/token", f"{server.url}/authorize", f"{server.url}/revoke",
                         scopes=["mail", "openid", "offline_access"])


def connect(server, provider, username="ana@contoso.example"):
    started = oauth.start_authorisation(provider, APP, CALLBACK, provider.scopes_for(IMAP_SMTP),
                                        login_hint=username)
    return oauth.finish_authorisation(provider, APP, started, server.approve(started.url))


def test_the_sign_in_url_carries_state_and_an_s256_challenge(server):
    provider = oauth.microsoft("contoso.onmicrosoft.com", base_url=server.url)
    first = oauth.start_authorisation(provider, APP, CALLBACK, provider.scopes_for(IMAP_SMTP))
    second = oauth.start_authorisation(provider, APP, CALLBACK, provider.scopes_for(IMAP_SMTP))
    query = {k: v[0] for k, v in parse_qs(urlsplit(first.url).query).items()}
    assert urlsplit(first.url).path == "/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    assert query["state"] == first.state and first.state != second.state and first.verifier != second.verifier
    digest = hashlib.sha256(first.verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert query["code_challenge_method"] == "S256" and query["client_id"] == "tidemark-app"
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in query["scope"].split()
    assert "offline_access" in query["scope"].split() and SECRET not in first.url
    assert first.verifier not in repr(first)


@pytest.mark.parametrize("kind", ["generic", "microsoft", "google"])
def test_code_flow_with_pkce_names_the_account(server, kind):
    provider = {"generic": lambda: generic(server),
                "microsoft": lambda: oauth.microsoft("contoso.example", base_url=server.url),
                "google": lambda: oauth.google(base_url=server.url)}[kind]()
    grant = connect(server, provider)
    assert grant.account == "ana@contoso.example"
    assert grant.refresh_token and grant.access_token
    assert timedelta(minutes=59) < grant.expires_at - datetime.now(UTC) <= timedelta(hours=1)
    assert grant.expires_at.tzinfo is not None
    assert server.introspect(grant.access_token)["username"] == "ana@contoso.example"
    sent = server.token_requests[-1]
    assert sent["code_verifier"] and sent["grant_type"] == "authorization_code"
    assert grant.access_token not in repr(grant) and grant.refresh_token not in repr(grant)


def test_a_callback_with_another_state_is_refused_before_any_exchange(server):
    provider = generic(server)
    started = oauth.start_authorisation(provider, APP, CALLBACK, provider.scopes)
    answer = server.approve(started.url)
    with pytest.raises(OAuthError) as caught:
        oauth.finish_authorisation(provider, APP, started, {**answer, "state": "forged"})
    assert "state" in str(caught.value) and server.token_requests == []
    for forged in ("état", "", None):
        with pytest.raises(OAuthError, match="state"):
            oauth.finish_authorisation(provider, APP, started, {**answer, "state": forged})


def test_declined_consent_reads_as_declined(server):
    provider = generic(server)
    started = oauth.start_authorisation(provider, APP, CALLBACK, provider.scopes)
    with pytest.raises(OAuthError) as caught:
        oauth.finish_authorisation(provider, APP, started, server.approve(started.url, accept=False))
    assert caught.value.kind == "consent" and "declined" in str(caught.value)


def test_refresh_saves_the_rotated_token_and_the_old_one_is_refused(server):
    provider = generic(server)
    first = connect(server, provider)
    second = oauth.refresh(provider, APP, first.refresh_token)
    assert second.refresh_token != first.refresh_token and second.access_token != first.access_token
    assert server.introspect(second.access_token)["active"] is True
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, first.refresh_token)
    assert caught.value.reconnect and caught.value.code == "invalid_grant"
    assert first.refresh_token not in str(caught.value)
    assert oauth.refresh(provider, APP, second.refresh_token).refresh_token


def test_refresh_keeps_the_refresh_token_when_none_comes_back(server):
    server.rotate_refresh_tokens = False
    provider = oauth.google(base_url=server.url)
    first = connect(server, provider)
    second = oauth.refresh(provider, APP, first.refresh_token)
    assert second.refresh_token == first.refresh_token and second.access_token != first.access_token


def test_microsoft_refresh_sends_the_scopes_and_the_secret_in_the_form(server):
    provider = oauth.microsoft("contoso.example", base_url=server.url)
    first = connect(server, provider)
    oauth.refresh(provider, APP, first.refresh_token, provider.scopes_for(IMAP_SMTP))
    sent = server.token_requests[-1]
    assert sent["client_secret"] == SECRET and "IMAP.AccessAsUser.All" in sent["scope"]


def test_client_credentials_for_a_customer_tenant(server):
    provider = oauth.microsoft("contoso.example", base_url=server.url)
    grant = oauth.client_credentials(provider, APP, provider.scopes_for(["imap"], flow="app"))
    assert grant.refresh_token is None and grant.account is None
    assert grant.scope == "https://outlook.office365.com/.default"
    seen = server.introspect(grant.access_token)
    assert seen["active"] and seen["username"] == "helpdesk@contoso.example"
    with pytest.raises(OAuthError, match="tenant id or domain"):
        oauth.client_credentials(oauth.microsoft("organizations", base_url=server.url), APP, ["x"])
    with pytest.raises(OAuthError, match="no app-only access"):
        oauth.client_credentials(oauth.google(base_url=server.url), APP, ["x"])


def test_revocation_ends_the_grant(server):
    provider = generic(server)
    grant = connect(server, provider)
    assert oauth.revoke(provider, APP, grant.refresh_token) is True
    assert server.introspect(grant.access_token) == {"active": False}
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, grant.refresh_token)
    assert caught.value.reconnect
    assert oauth.revoke(oauth.microsoft("contoso.example", base_url=server.url), APP, "anything") is False


@pytest.mark.parametrize(("body", "status", "kind", "code", "words"), [
    (MICROSOFT_CONSENT_MISSING, 400, "consent", "AADSTS65001", "consent missing"),
    (MICROSOFT_WRONG_TENANT, 400, "tenant", "AADSTS90002", "wrong tenant"),
    (MICROSOFT_APP_NOT_IN_TENANT, 400, "tenant", "AADSTS700016", "wrong tenant"),
    (MICROSOFT_BAD_SECRET, 401, "client_secret", "AADSTS7000215", "wrong client secret"),
    (MICROSOFT_EXPIRED_SECRET, 401, "client_secret", "AADSTS7000222", "client secret has expired"),
])
def test_microsoft_errors_in_plain_words(server, body, status, kind, code, words):
    server.fail_next(body, status=status)
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(oauth.microsoft("contoso.example", base_url=server.url), APP, ["x/.default"])
    assert caught.value.kind == kind and caught.value.code == code
    assert words in str(caught.value) and code in str(caught.value) and SECRET not in str(caught.value)


def test_googles_invalid_grant_asks_for_a_reconnect(server):
    provider = oauth.google(base_url=server.url)
    grant = connect(server, provider)
    server.fail_next(GOOGLE_INVALID_GRANT)
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, grant.refresh_token)
    assert str(caught.value) == "the grant was revoked or has expired: reconnect the mailbox (invalid_grant)"
    assert caught.value.reconnect


def test_a_wrong_secret_from_the_real_check_and_nothing_secret_in_logs(server, caplog):
    wrong = AppCredentials("tidemark-app", "not-the-secret")
    with caplog.at_level(logging.DEBUG), pytest.raises(OAuthError) as caught:
        oauth.client_credentials(generic(server), wrong, ["mail"])
    assert caught.value.kind == "client_secret" and caught.value.code == "invalid_client"
    assert "not-the-secret" not in str(caught.value) and "not-the-secret" not in caplog.text


def test_an_unreachable_server_is_a_network_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = oauth.generic(f"http://127.0.0.1:{port}/token")
    with pytest.raises(OAuthError) as caught:
        oauth.client_credentials(provider, APP, ["mail"], timeout=2)
    assert caught.value.kind == "network" and caught.value.temporary and "could not reach" in str(caught.value)


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        provider = oauth.generic(f"http://127.0.0.1:{listener.getsockname()[1]}/token")
        with pytest.raises(OAuthError) as caught:
            oauth.client_credentials(provider, APP, ["mail"], timeout=0.5)
    assert caught.value.kind == "network"


def test_plain_http_is_refused_off_loopback_and_settings_are_checked():
    with pytest.raises(OAuthError, match="https"):
        oauth.client_credentials(oauth.generic("http://login.example.com/token"), APP, ["mail"])
    with pytest.raises(OAuthError, match="tenant"):
        oauth.microsoft("contoso.com/../evil")
    with pytest.raises(OAuthError, match="unknown OAuth provider"):
        oauth.provider("yahoo")
    assert oauth.microsoft("organizations").token_url == \
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert oauth.google().authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert oauth.google().token_url == "https://oauth2.googleapis.com/token"


def test_a_refresh_token_with_a_lifetime_says_when_it_lapses_and_then_fails(server):
    server.refresh_lifetime = 7 * 86400  # Google's apps in "testing" mode
    provider = oauth.google(base_url=server.url)
    grant = connect(server, provider)
    assert timedelta(days=6, hours=23) < grant.refresh_expires_at - datetime.now(UTC) <= timedelta(days=7)
    server.expire(grant.refresh_token)
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, grant.refresh_token)
    assert caught.value.reconnect


def test_an_expired_access_token_is_inactive_and_a_refresh_brings_a_working_one(server):
    provider = generic(server)
    grant = connect(server, provider)
    server.expire(grant.access_token)
    assert server.introspect(grant.access_token) == {"active": False}
    renewed = oauth.refresh(provider, APP, grant.refresh_token)
    assert server.introspect(renewed.access_token)["active"] is True
    assert connect(server, provider).refresh_expires_at is None


def test_admin_consent_link_comes_back_with_the_customers_tenant(server):
    provider = oauth.microsoft("organizations", base_url=server.url)
    started = oauth.start_admin_consent(provider, APP, CALLBACK)
    assert urlsplit(started.url).path == "/organizations/v2.0/adminconsent"
    assert parse_qs(urlsplit(started.url).query)["scope"] == ["https://graph.microsoft.com/.default"]
    tenant = oauth.finish_admin_consent(provider, started, server.approve(started.url))
    assert tenant == server.tenant_id and server.admin_consents == [("tidemark-app", server.tenant_id)]
    # The customer's tenant then gives app-only tokens.
    customer = oauth.microsoft(tenant, base_url=server.url)
    assert oauth.client_credentials(customer, APP, customer.scopes_for(["graph"], flow="app")).access_token


def test_admin_consent_declined_or_forged(server):
    provider = oauth.microsoft("organizations", base_url=server.url)
    started = oauth.start_admin_consent(provider, APP, CALLBACK)
    declined = server.approve(started.url, accept=False)
    with pytest.raises(OAuthError) as caught:
        oauth.finish_admin_consent(provider, started, declined)
    assert caught.value.code == "AADSTS65004" and caught.value.kind == "consent"
    with pytest.raises(OAuthError, match="state"):
        oauth.finish_admin_consent(provider, started, {"admin_consent": "True", "tenant": "x", "state": "forged"})
    with pytest.raises(OAuthError, match="Microsoft feature"):
        oauth.start_admin_consent(oauth.google(), APP, CALLBACK)


def test_other_refusals_quote_the_server_without_our_secrets(server):
    provider = generic(server)
    grant = connect(server, provider)
    server.fail_next({"error": "invalid_scope", "error_description": f"scope bad for {grant.refresh_token}\nTrace: 1"})
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, grant.refresh_token)
    assert str(caught.value) == "the OAuth server refused the request: scope bad for [hidden] (invalid_scope)"
    assert caught.value.kind == "refused" and not caught.value.temporary
    server.fail_next({"error": "temporarily_unavailable"}, status=503)
    with pytest.raises(OAuthError) as caught:
        oauth.refresh(provider, APP, grant.refresh_token)
    assert caught.value.temporary and "unavailable (HTTP 503)" in str(caught.value)
    assert oauth.refresh(provider, APP, grant.refresh_token).access_token  # the failures did not use it up


def test_scopes_per_provider_flow_and_protocol():
    ms = oauth.microsoft("contoso.example")
    assert ms.scopes_for(["pop3", "smtp"]) == [
        "https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send",
        "offline_access", "openid", "profile"]
    assert ms.scopes_for(["imap", "smtp"], flow="app") == ["https://outlook.office365.com/.default"]
    assert ms.scopes_for(["graph"], flow="app") == ["https://graph.microsoft.com/.default"]
    assert "https://graph.microsoft.com/Mail.Send" in ms.scopes_for(["graph"])
    assert ms.scopes_for(["graph"], shared=True)[:4] == [
        "https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send",
        "https://graph.microsoft.com/Mail.ReadWrite.Shared", "https://graph.microsoft.com/Mail.Send.Shared"]
    assert ms.scopes_for(["graph"], flow="app", shared=True) == ["https://graph.microsoft.com/.default"]
    assert ms.scopes_for(["imap"], shared=True) == ms.scopes_for(["imap"])  # IMAP's scope covers shared mailboxes
    with pytest.raises(OAuthError, match="Graph or for IMAP"):
        ms.scopes_for(["graph", "smtp"])
    assert oauth.google().scopes_for(["imap", "smtp"]) == ["https://mail.google.com/", "openid", "email"]
    assert oauth.generic("https://id.example/token", scopes="mail offline").scopes_for(["imap"]) == ["mail", "offline"]
    with pytest.raises(OAuthError, match="unknown protocol"):
        ms.scopes_for(["ews"])

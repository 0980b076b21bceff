"""The test authorisation server itself, over HTTP with `requests`: if it lied, every OAuth test would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.oauth_server import MICROSOFT_BAD_SECRET

REDIRECT = "http://127.0.0.1/callback"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def consent(server, path="/authorize", accept=True, username="ana@contoso.example", scope="openid offline_access"):
    """Walk the consent page as a browser would; the redirect's query and the PKCE verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page = requests.get(server.url + path, params={
        "response_type": "code", "client_id": "tidemark", "redirect_uri": REDIRECT, "scope": scope,
        "state": "st-1", "code_challenge": challenge, "code_challenge_method": "S256"}, timeout=5)
    assert page.status_code == 200 and "Accept" in page.text
    form = {name: value.replace("&amp;", "&") for name, value in HIDDEN.findall(page.text)}
    form.update(username=username, consent="accept" if accept else "decline")
    answer = requests.post(server.url + path, data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}, verifier


def token(server, **form):
    return requests.post(server.url + "/token", data=form, auth=("tidemark", "s3cret-client"), timeout=5)


@pytest.fixture
def server(oauth_server):
    oauth_server.register_client(redirect_uris=[REDIRECT],
                                 grant_types=["authorization_code", "refresh_token", "client_credentials"])
    return oauth_server


def test_code_flow_with_pkce_refresh_rotation_and_introspection(server):
    query, verifier = consent(server, path="/contoso.example/oauth2/v2.0/authorize")
    assert query["state"] == "st-1"
    wrong = token(server, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT,
                  code_verifier=secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"

    query, verifier = consent(server)
    first = token(server, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT,
                  code_verifier=verifier).json()
    assert first["refresh_token"] and first["expires_in"] == 3600 and first["id_token"].count(".") == 2
    seen = requests.post(server.introspection_url, data={"token": first["access_token"]}, timeout=5).json()
    assert seen["active"] is True and seen["username"] == "ana@contoso.example"
    assert seen["client_id"] == "tidemark" and seen["exp"] > 0 and "offline_access" in seen["scope"]

    second = token(server, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    again = token(server, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert token(server, grant_type="refresh_token", refresh_token=second["refresh_token"]).status_code == 200


def test_without_rotation_the_refresh_token_stays(server):
    server.rotate_refresh_tokens = False
    query, verifier = consent(server)
    first = token(server, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT,
                  code_verifier=verifier).json()
    second = token(server, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert "refresh_token" not in second
    assert token(server, grant_type="refresh_token", refresh_token=first["refresh_token"]).status_code == 200


def test_declining_answers_access_denied(server):
    query, _ = consent(server, accept=False)
    assert query["error"] == "access_denied" and query["state"] == "st-1"


def test_introspection_in_dovecots_three_modes_and_expiry(server):
    access = token(server, grant_type="client_credentials", scope="https://outlook.office365.com/.default").json()
    value = access["access_token"]
    assert "refresh_token" not in access
    by_get = requests.get(f"{server.introspection_url}?token={value}", timeout=5).json()
    by_auth = requests.get(server.introspection_url, headers={"Authorization": f"Bearer {value}"}, timeout=5).json()
    assert by_get["active"] and by_auth["active"] and by_get["username"] == "tidemark"
    server.expire(value)
    assert requests.post(server.introspection_url, data={"token": value}, timeout=5).json() == {"active": False}
    assert requests.get(f"{server.introspection_url}?token=nonsense", timeout=5).json() == {"active": False}


def test_revocation_and_revoking_a_grant(server):
    query, verifier = consent(server)
    first = token(server, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT,
                  code_verifier=verifier).json()
    revoked = requests.post(server.url + "/revoke", data={"token": first["refresh_token"]},
                            auth=("tidemark", "s3cret-client"), timeout=5)
    assert revoked.status_code == 200
    assert token(server, grant_type="refresh_token", refresh_token=first["refresh_token"]).status_code == 400
    assert server.introspect(first["access_token"]) == {"active": False}

    query, verifier = consent(server)
    other = token(server, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT,
                  code_verifier=verifier).json()
    renewed = token(server, grant_type="refresh_token", refresh_token=other["refresh_token"]).json()
    server.revoke_grant(other["access_token"])
    assert token(server, grant_type="refresh_token", refresh_token=renewed["refresh_token"]).status_code == 400
    assert server.introspect(renewed["access_token"]) == {"active": False}


def test_a_queued_failure_answers_once_and_wrong_secrets_are_refused(server):
    server.fail_next(MICROSOFT_BAD_SECRET, status=401)
    failed = token(server, grant_type="client_credentials")
    assert failed.status_code == 401 and failed.json()["error_codes"] == [7000215]
    assert token(server, grant_type="client_credentials").status_code == 200
    wrong = requests.post(server.url + "/token", data={"grant_type": "client_credentials"},
                          auth=("tidemark", "not-the-secret"), timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


@pytest.mark.parametrize("params", [{}, {"code_challenge": "x" * 43, "code_challenge_method": "plain"}])
def test_the_consent_page_requires_an_s256_challenge(server, params):
    page = requests.get(server.url + "/authorize", params={
        "response_type": "code", "client_id": "tidemark", "redirect_uri": REDIRECT, "state": "s", **params},
        timeout=5, allow_redirects=False)
    # Refused on the server's own page (no consent form), not sent back to the client.
    assert page.status_code == 400 and "invalid_request" in page.text and "Accept" not in page.text

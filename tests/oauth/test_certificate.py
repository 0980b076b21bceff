"""A certificate instead of a client secret: the PEM checked, and app-only tokens obtained with an
RFC 7523 client assertion from the local authorisation server (tests/oauth_server.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes

from portal import oauth
from portal.oauth import AppCredentials, OAuthError
from portal.oauth.certificate import CertificateProblem, client_assertion, read_certificate
from tests.certificates import cert_pem, certificate, credential, key_pem, rsa_key


def _part(jwt: str, i: int) -> dict:
    piece = jwt.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(piece + "=" * (-len(piece) % 4)))


def test_read_certificate_gives_entras_thumbprint_and_not_after():
    pem, _, cert = credential()
    found = read_certificate(pem)
    assert found.thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert found.not_after == cert.not_valid_after_utc


def test_pem_problems_in_plain_words():
    other = key_pem(rsa_key(2048, 1))
    _, own_cert, _ = credential()
    with pytest.raises(CertificateProblem, match="does not belong to the certificate"):
        read_certificate(other + own_cert)
    with pytest.raises(CertificateProblem, match="no private key"):
        read_certificate(own_cert)
    with pytest.raises(CertificateProblem, match="no certificate"):
        read_certificate(other)
    small = rsa_key(1024)
    with pytest.raises(CertificateProblem, match="1024 bits"):
        read_certificate(key_pem(small) + cert_pem(certificate(small)))
    past = datetime(2025, 3, 31, 12, tzinfo=UTC)
    with pytest.raises(CertificateProblem, match="expired on 2025-03-31"):
        read_certificate(credential(not_after=past, not_before=past - timedelta(days=30))[0])


def test_client_assertion_claims_and_x5t():
    pem, _, cert = credential()
    jwt = client_assertion(pem, "app-id", "https://login.example/t/oauth2/v2.0/token", now=1_800_000_000)
    header, claims = _part(jwt, 0), _part(jwt, 1)
    assert header["alg"] == "RS256"
    assert base64.urlsafe_b64decode(header["x5t"] + "=") == cert.fingerprint(hashes.SHA1())
    assert claims["iss"] == claims["sub"] == "app-id"
    assert claims["aud"] == "https://login.example/t/oauth2/v2.0/token"
    assert claims["nbf"] == claims["iat"] == 1_800_000_000 and claims["exp"] == 1_800_000_600
    assert claims["jti"] and claims["jti"] != _part(client_assertion(pem, "app-id", "x"), 1)["jti"]


@pytest.fixture
def cert_server(oauth_server):
    pem, public, _ = credential()
    oauth_server.register_client("cert-app", "", grant_types=["client_credentials"], certificate=public)
    return oauth_server, pem


def test_client_credentials_with_a_certificate(cert_server):
    server, pem = cert_server
    provider = oauth.microsoft("contoso.example", base_url=server.url)
    grant = oauth.client_credentials(provider, AppCredentials("cert-app", certificate=pem), ["x/.default"])
    assert server.token(grant.access_token).client_id == "cert-app"
    sent = server.token_requests[-1]
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in sent and "BEGIN" not in json.dumps(sent)
    assert _part(sent["client_assertion"], 1)["aud"] == provider.token_url


def test_another_keys_signature_is_refused_in_plain_words(cert_server):
    server, pem = cert_server
    _, public, _ = credential()
    other_key = rsa_key(2048, 1)
    # The right certificate with another key: the x5t matches, the signature does not.
    forged = key_pem(other_key) + public
    provider = oauth.microsoft("contoso.example", base_url=server.url)
    with pytest.raises(OAuthError) as refused:
        oauth.client_credentials(provider, AppCredentials("cert-app", certificate=forged), ["x/.default"])
    assert refused.value.kind == "client_secret" and "AADSTS700027" in refused.value.code
    assert "private key is not the one of a certificate uploaded" in refused.value.message
    assert server.token_requests and not server.by_access

"""The OAuth2 client session: Authlib's requests client, held to our rules for every request.

Every request has a timeout, follows no redirect, has its answer read up to 4 MiB
(transport.urls.MAX_ANSWER), and goes to https only (plain http on loopback only): a client secret
or a refresh token must not cross a network in clear text. Given a `reach` (transport.reach),
requests go only to the addresses it checked. Every answer is
read here, so that the server's error body (error, error_description, Microsoft's error_codes)
and its HTTP status reach errors.translate whole, and failures of the network read in plain words.
"""

from __future__ import annotations

import base64
import logging
import socket
from urllib.parse import quote_plus, urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session

from portal.oauth.certificate import CertificateAuth
from portal.oauth.errors import OAuthError, translate, who
from portal.transport.reach import RefusedServer, pin
from portal.transport import urls

__all__ = ["OAuthClient", "check_url", "read_answer", "seconds"]

log = logging.getLogger(__name__)

TIMEOUT = 20  # seconds; an unreachable sign-in service must not hold a fetch job for minutes


def check_url(url: str) -> str:
    if refusal := urls.url_refusal(url):
        raise OAuthError(refusal, kind="config")
    return url


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both halves form-encoded, then Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _form_encoded_basic(client, method, uri, headers, body):
    # Authlib 1.9.9's client_secret_basic joins id and secret unencoded; servers decode them (RFC
    # 6749 2.3.1), so a secret holding '%', '+' or ':' would be refused.
    headers["Authorization"] = basic_auth(client.client_id, client.client_secret)
    return uri, headers, body


class OAuthClient(OAuth2Session):
    """Authlib's OAuth2Session for one provider and app registration.

    `secrets` are the values a request sends (code, verifier, tokens): they are cut out of any
    server words an error quotes, as the client secret is.
    """

    def __init__(self, provider, app, *, timeout: float = TIMEOUT, secrets=(), redirect_uri: str | None = None,
                 scope=None, reach=None):
        if app.certificate:
            method = "private_key_jwt"  # RFC 7523 client assertion signed with the certificate's key
        elif not app.client_secret:
            method = "none"  # a public client: its id in the form
        else:
            method = "client_secret_basic" if provider.client_auth == "basic" else "client_secret_post"
        super().__init__(app.client_id, app.client_secret or None, token_endpoint_auth_method=method,
                         revocation_endpoint_auth_method=method, code_challenge_method="S256",
                         redirect_uri=redirect_uri, scope=scope)
        self.register_client_auth_method(("client_secret_basic", _form_encoded_basic))
        if app.certificate:
            self.register_client_auth_method(CertificateAuth(app.certificate))
        self.provider = provider
        self.sent = (app.client_secret, *secrets)
        self.wait = timeout
        # An admin-typed URL, with several MSPs: only to checked addresses (transport.reach).
        pin(self, reach)

    def request(self, method, url, withhold_token=False, auth=None, **kwargs):
        """Every request: https (or loopback), the timeout, no redirect (one could carry the form to
        another host or to plain http), network failures as OAuthError."""
        check_url(url)
        # verify per request: a session-wide one would yield to REQUESTS_CA_BUNDLE, which urllib ignored.
        kwargs.update(timeout=self.wait, allow_redirects=False, verify=urls.trusted_cas(), stream=True)
        try:
            with super().request(method, url, withhold_token=True, auth=auth, **kwargs) as response:
                body = urls.read_limited(response, urls.MAX_ANSWER)
        except RefusedServer as refused:  # nothing was sent
            raise OAuthError(refused.message, kind="config") from None
        except socket.gaierror as failure:  # the address rule resolves the name itself
            host = urlsplit(url).hostname
            raise OAuthError(f"could not reach {who(self.provider.name)}'s sign-in service at {host}: its host name "
                             f"does not resolve ({failure.strerror})", kind="network") from None
        except requests.RequestException as failure:
            host = urlsplit(url).hostname
            log.info("OAuth: %s could not be reached: %s", host, type(failure).__name__)
            raise OAuthError(f"could not reach {who(self.provider.name)}'s sign-in service at {host}: "
                             f"{urls.network_words(failure, self.wait)}", kind="network") from None
        if body is None:
            raise OAuthError(f"{who(self.provider.name)}'s sign-in service at {urlsplit(url).hostname} answered with "
                             f"more than {urls.size_words(urls.MAX_ANSWER)}: it was not read", kind="server")
        response._content = body  # what requests keeps of a body it read itself; Authlib reads .content
        return response

    def parse_response_token(self, resp):
        """A token answer. Replaces Authlib's reading, which keeps only error and error_description
        of a refusal and drops the body of a 5xx answer."""
        body = self.answer(resp)
        if not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise OAuthError(f"{who(self.provider.name)}'s token answer has no access token", kind="server")
        self.token = {k: v for k, v in body.items() if k != "expires_in" or seconds(v) is not None}  # Authlib int()s it
        return self.token

    def answer(self, resp, empty_ok: bool = False) -> dict:
        """The JSON object answered; raises OAuthError in plain words, never with a secret."""
        return read_answer(resp.status_code, resp.content, self.provider, urlsplit(resp.url).hostname,
                           secrets=self.sent, empty_ok=empty_ok)


def read_answer(status: int, raw: bytes, provider, host: str | None, *, secrets=(), empty_ok: bool = False) -> dict:
    body = urls.json_object(raw)
    if status < 400:
        if body is not None:
            return body
        if empty_ok:
            return {}
    name = provider.name
    if body is None:
        raise OAuthError(f"{who(name)}'s sign-in service at {host} answered HTTP {status} without an OAuth answer",
                         code=f"HTTP {status}", kind="refused" if 400 <= status < 500 else "server", status=status)
    error = translate(name, status, body, tenant=provider.tenant, secrets=secrets)
    log.info("OAuth: %s refused a request: %s", host, error.code)
    raise error


def seconds(value) -> int | None:
    """A lifetime the server gave (expires_in, refresh_token_expires_in) as whole seconds, or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

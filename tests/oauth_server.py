"""A real OAuth2 authorisation server on loopback (Authlib + Flask in a thread), memory only.

Microsoft and Google cannot be reached from the tests, so this server speaks the same protocol:
- authorisation code with PKCE (S256 only, required) and state; the consent page is a small HTML
  form (`username` field, **Accept** and **Decline** buttons) that posts back, so `requests` or a
  browser can drive it; `login_hint` fills the username in;
- refresh tokens, rotated by default (the used refresh token stops working; `rotate_refresh_tokens
  = False` answers without a new one, as Google does);
- client credentials; revocation (RFC 7009); introspection (RFC 7662);
- `private_key_jwt` (RFC 7523) for a client registered with a `certificate` (PEM): the assertion's
  RS256 signature checked with the certificate's public key, its `x5t` header against the
  certificate's SHA-1 thumbprint, aud (the token URL), iss = sub = client id, exp and nbf; a
  refusal answers as Microsoft does (AADSTS700027 for a bad signature);
- with `openid` in the scope, an `id_token` (HS256 with the client secret) naming the account.

Paths (`server.url` is `http://127.0.0.1:<port>`):
- generic: `/authorize`, `/token`, `/revoke`, `/introspect`;
- Microsoft's shapes: `/<tenant>/oauth2/v2.0/authorize`, `/<tenant>/oauth2/v2.0/token`, and admin
  consent `/<tenant>/v2.0/adminconsent` (answers `tenant=server.tenant_id`, records `admin_consents`);
- Google's shapes: `/o/oauth2/v2/auth`, `/token`, `/revoke`.

Introspection, for Dovecot's `oauth2` passdb (`server.introspection_url`):
- `introspection_mode = post`: `introspection_url = <url>/introspect`, the token as `token=` form;
- `introspection_mode = get`: `introspection_url = <url>/introspect?token=` (Dovecot appends the
  token); `/introspect/<token>` works too;
- `introspection_mode = auth`: `<url>/introspect` with `Authorization: Bearer <token>`.
Client authentication there is optional (Basic credentials, when sent, must be right). The answer
is `{"active": false}` or `{active, username, email, sub, scope, exp, iat, client_id, token_type}`;
for a client-credentials token the username is the client's `app_username` (or its id).
Tried with Dovecot 2.3.19 in all three modes (`passdb { driver = oauth2, mechanisms = xoauth2
oauthbearer, args = <file> }` with `username_attribute = username`): a live token logs in over IMAP
XOAUTH2; an expired or revoked one is refused, but Dovecot 2.3 then answers "[UNAVAILABLE]
Temporary authentication failure" (its passdb reports temp_fail for an inactive token, whatever
HTTP status we answer).

Test controls: `register_client(...)`; `approve(authorize_url, username, accept)` walks the consent
page with `requests` and returns the redirect's query; `expire(token)` (an access or refresh token
lapses now); `revoke_grant(token)` (every token of the grant that issued it); `fail_next(body,
status)` (the next token request answers that JSON instead, e.g. `MICROSOFT_BAD_SECRET`,
`GOOGLE_INVALID_GRANT`); `rotate_refresh_tokens`, `access_lifetime`, `refresh_lifetime`,
`token_requests` (every token request's form); `require_admin_consent` (client credentials in a
Microsoft tenant only after its admin consent here); `reset()`.
Fixtures: `oauth_server_session` (one per run) and `oauth_server` (emptied per test).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, InvalidRequestError, grants
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from portal.oauth import providers

__all__ = ["GOOGLE_INVALID_GRANT", "MICROSOFT_BAD_SECRET", "OAuthServer", "microsoft_login", "oauth_server",
           "oauth_server_session"]

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
ACCESS_LIFETIME = 3600
ASSERTION_TYPE = JWTBearerClientAssertion.CLIENT_ASSERTION_TYPE
DEFAULT_USER = "helpdesk@contoso.example"
CONSENTING_TENANT = "7c0e5a1d-2b3f-4c6d-8e9f-0a1b2c3d4e5f"

# Answers copied in shape from the providers' documentation, for `fail_next`.
MICROSOFT_BAD_SECRET = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         "request is the client secret value, not the client secret ID.",
    "error_codes": [7000215],
}
MICROSOFT_EXPIRED_SECRET = {
    "error": "invalid_client",
    "error_description": "AADSTS7000222: The provided client secret keys for app 'x' are expired.",
    "error_codes": [7000222],
}
MICROSOFT_CONSENT_MISSING = {
    "error": "invalid_grant",
    "error_description": "AADSTS65001: The user or administrator has not consented to use the application.",
    "error_codes": [65001],
}
MICROSOFT_WRONG_TENANT = {
    "error": "invalid_request",
    "error_description": "AADSTS90002: Tenant 'nowhere.example' not found.",
    "error_codes": [90002],
}
MICROSOFT_APP_NOT_IN_TENANT = {
    "error": "unauthorized_client",
    "error_description": "AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.",
    "error_codes": [700016],
}
GOOGLE_INVALID_GRANT = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}


@dataclass
class OAuthClient(ClientMixin):
    client_id: str
    client_secret: str = ""
    redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    scope: str = ""  # empty: any scope
    app_username: str | None = None  # who a client-credentials token acts as, for introspection
    certificate: str = ""  # PEM: the client signs in with private_key_jwt instead of a secret

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        if not scope or not self.scope:
            return scope or ""
        allowed = set(scope_to_list(self.scope))
        return " ".join(s for s in scope_to_list(scope) if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return bool(self.client_secret) and hmac.compare_digest(self.client_secret, client_secret or "")

    def check_endpoint_auth_method(self, method, endpoint):
        if method == "private_key_jwt":
            return bool(self.certificate)
        return method != "none" if self.client_secret else method == "none" and not self.certificate

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass
class User:
    username: str

    def get_user_id(self):
        return self.username


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    username: str
    code_challenge: str
    code_challenge_method: str
    grant_id: str

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Token:
    """One token response: an access token and perhaps a refresh token, of one grant."""

    client_id: str
    username: str | None
    scope: str
    access_token: str
    refresh_token: str | None
    grant_id: str
    issued_at: int
    expires_at: int
    refresh_revoked: bool = False
    refresh_expires_at: int | None = None
    access_revoked: bool = False

    def check_client(self, client):
        return client.client_id == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_at - self.issued_at

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return self.access_revoked

    def get_user(self):
        return User(self.username) if self.username else None

    def get_client(self):
        return None


class _CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def save_authorization_code(self, code, req):
        state: OAuthServer = self.server.state
        data = req.payload.data
        state.codes[code] = AuthorizationCode(
            code=code, client_id=req.client.client_id, redirect_uri=req.payload.redirect_uri or "",
            scope=req.payload.scope or "", username=req.user.username,
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method"),
            grant_id=secrets.token_hex(8),
        )

    def query_authorization_code(self, code, client):
        found = self.server.state.codes.get(code)
        return found if found and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code):
        self.server.state.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code):
        self.request.grant_id = authorization_code.grant_id  # the tokens of this grant share it
        return User(authorization_code.username)


class _S256Only(CodeChallenge):
    """PKCE for every client, confidential too (Authlib requires it of public clients only), and
    S256 only: a client that forgets it fails here as it would at Microsoft or Google."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        if not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE (S256) is required")
        if grant.request.payload.data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': use S256")
        return super().validate_code_challenge(grant, redirect_uri)


class _RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def authenticate_refresh_token(self, refresh_token):
        token = self.server.state.by_refresh.get(refresh_token)
        if token is None or token.refresh_revoked:
            return None
        if token.refresh_expires_at is not None and time.time() >= token.refresh_expires_at:
            return None
        self.request.grant_id = token.grant_id
        return token

    def authenticate_user(self, refresh_token):
        return refresh_token.get_user() or User("")

    def issue_token(self, user, refresh_token):
        return self.generate_token(user=user, scope=self.request.payload.scope or refresh_token.get_scope(),
                                   include_refresh_token=self.server.state.rotate_refresh_tokens)

    def revoke_old_credential(self, refresh_token):
        if self.server.state.rotate_refresh_tokens:
            refresh_token.refresh_revoked = True


class _ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class _AssertionRefused(InvalidClientError):
    """invalid_client with Microsoft's error code, as Entra ID answers a bad client assertion."""

    def __init__(self, code: int, description: str):
        super().__init__(description=f"AADSTS{code}: {description}")
        self.code = code

    def get_body(self):
        return [*super().get_body(), ("error_codes", [self.code])]


def check_client_assertion(query_client, req):
    """Authlib's client authentication hook for `private_key_jwt` (RFC 7523 2.2)."""
    form = req.form
    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        return None
    assertion = form["client_assertion"]
    try:
        header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
        claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    except (ValueError, IndexError):
        raise _AssertionRefused(700024, "Client assertion is not a JWT.") from None
    client = query_client(str(claims.get("iss") or ""))
    if client is None or not client.certificate or claims.get("sub") != client.client_id:
        raise _AssertionRefused(700016, "Application with the assertion's issuer was not found.")
    cert = x509.load_pem_x509_certificate(client.certificate.encode())
    if header.get("alg") != "RS256" or header.get("x5t") != _b64(cert.fingerprint(hashes.SHA1())):
        raise _AssertionRefused(700027, "The certificate with the assertion's x5t is not registered on the "
                                        "application.")
    try:
        jwt.decode(assertion, RSAKey.import_key(cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), algorithms=["RS256"])
    except JoseError:
        raise _AssertionRefused(700027, "Client assertion failed signature validation.") from None
    now = time.time()
    token_url = req.uri.split("?")[0]
    if claims.get("aud") != token_url:
        raise _AssertionRefused(700024, f"The assertion's audience is not {token_url}.")
    if not claims.get("jti") or int(claims.get("exp", 0)) <= now or int(claims.get("nbf", 0)) > now + 60:
        raise _AssertionRefused(700024, "Client assertion is not within its valid time range.")
    return client


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        state = self.server.state
        return state.by_access.get(token_string) or state.by_refresh.get(token_string)

    def revoke_token(self, token, req):
        # Revoking either half ends the grant, as Google does.
        self.server.state.revoke_grant(token.access_token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_id_token(claims: dict, key: str) -> str:
    """An HS256 JWT, signed with the client secret (the id_token a code flow gets back)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


HIDDEN_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
CONSENT_PAGE = """<!doctype html><title>Sign in and consent</title>
<h1>{client} asks for access</h1><p>Scopes: <code>{scope}</code></p>
<form method="post" action="{action}"><label>Account <input name="username" value="{username}"></label>
{hidden}<button name="consent" value="accept">Accept</button>
<button name="consent" value="decline">Decline</button></form>"""


class OAuthServer:
    """The server's state and test controls; `url` once started."""

    def __init__(self):
        self.lock = threading.RLock()
        self.url = ""
        self.reset()

    def reset(self):
        with self.lock:
            self.clients: dict[str, OAuthClient] = {}
            self.codes: dict[str, AuthorizationCode] = {}
            self.by_access: dict[str, Token] = {}
            self.by_refresh: dict[str, Token] = {}
            self.failures: list[tuple[int, dict]] = []
            self.token_requests: list[dict] = []  # the form of every token request, for assertions
            self.rotate_refresh_tokens = True
            self.access_lifetime = ACCESS_LIFETIME
            # Seconds a refresh token lives, announced as `refresh_token_expires_in` (Google does
            # so for apps in "testing" mode: 7 days); None: until used or revoked.
            self.refresh_lifetime: int | None = None
            self.default_username = DEFAULT_USER
            self.tenant_id = CONSENTING_TENANT  # what admin consent answers as the customer's tenant
            self.admin_consents: list[tuple[str, str]] = []  # (client id, tenant id) consented
            # True: a client-credentials token at /<tenant>/oauth2/v2.0/token only for a tenant that
            # has consented here (else AADSTS700016, as Entra ID answers for an app not in the tenant).
            self.require_admin_consent = False

    # --- test controls ---------------------------------------------------------------------------

    def register_client(self, client_id="tidemark", client_secret="s3cret-client", redirect_uris=(),
                        grant_types=("authorization_code", "refresh_token"), scope="", app_username=None,
                        certificate=""):
        """`certificate`: a PEM certificate; the client then signs in with private_key_jwt (give
        `client_secret=""` for a certificate alone)."""
        client = OAuthClient(client_id, client_secret, list(redirect_uris), list(grant_types), scope, app_username,
                             certificate)
        with self.lock:
            self.clients[client_id] = client
        return client

    def expire(self, token: str):
        """The access token (or the refresh token, given one) lapses now."""
        with self.lock:
            if token in self.by_access:
                self.by_access[token].expires_at = int(time.time()) - 1
            elif token in self.by_refresh:
                self.by_refresh[token].refresh_expires_at = int(time.time()) - 1
            else:
                raise KeyError("no such token")

    def revoke_grant(self, token: str):
        """Every access and refresh token of the grant that issued `token` stops working."""
        with self.lock:
            found = self.by_access.get(token) or self.by_refresh.get(token)
            if found is None:
                return
            for t in list(self.by_access.values()):
                if t.grant_id == found.grant_id:
                    t.access_revoked = t.refresh_revoked = True

    def fail_next(self, body: dict, status: int = 400):
        """The next token request answers `status` with this JSON body."""
        with self.lock:
            self.failures.append((status, body))

    def approve(self, authorize_url: str, username: str | None = None, accept: bool = True) -> dict:
        """Walk the consent page as a person would (Accept or Decline); the query the server
        redirects back with (`code` and `state`, or `error`)."""
        page = requests.get(authorize_url, timeout=10)
        if page.status_code != 200:
            raise AssertionError(f"consent page answered {page.status_code}: {page.text[:200]}")
        form = {name: html.unescape(value) for name, value in HIDDEN_FIELD.findall(page.text)}
        shown = re.search(r'<input name="username" value="([^"]*)">', page.text).group(1)
        form["username"] = username or html.unescape(shown)
        form["consent"] = "accept" if accept else "decline"
        action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
        answer = requests.post(self.url + action, data=form, allow_redirects=False, timeout=10)
        if answer.status_code != 302:
            raise AssertionError(f"consent answered {answer.status_code}: {answer.text[:200]}")
        return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}

    def token(self, access_token: str) -> Token | None:
        return self.by_access.get(access_token)

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def introspect(self, token: str) -> dict:
        with self.lock:
            found = self.by_access.get(token)
            if found is None or found.is_expired() or found.access_revoked:
                return {"active": False}
            username = found.username
            if username is None:
                client = self.clients.get(found.client_id)
                username = (client.app_username if client else None) or found.client_id
            return {"active": True, "username": username, "email": username, "sub": username,
                    "scope": found.scope, "exp": found.expires_at, "iat": found.issued_at,
                    "client_id": found.client_id, "token_type": "Bearer"}

    # --- what Authlib calls ----------------------------------------------------------------------

    def _generate(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        now = int(time.time())
        lifetime = expires_in or self.access_lifetime
        answer = {"token_type": "Bearer", "access_token": secrets.token_urlsafe(32), "expires_in": lifetime,
                  "scope": scope or ""}
        if include_refresh_token and user is not None:
            answer["refresh_token"] = secrets.token_urlsafe(40)
            if self.refresh_lifetime is not None:
                answer["refresh_token_expires_in"] = self.refresh_lifetime
        if user is not None and "openid" in scope_to_list(scope or ""):
            claims = {"iss": self.url, "aud": client.client_id, "sub": user.username, "iat": now,
                      "exp": now + lifetime, "preferred_username": user.username, "email": user.username}
            answer["id_token"] = make_id_token(claims, client.client_secret or client.client_id)
        return answer

    def _save_token(self, answer, req):
        now = int(time.time())
        user = req.user if req.user and req.user.username else None
        grant_id = getattr(req, "grant_id", None) or secrets.token_hex(8)
        token = Token(req.client.client_id, user.username if user else None, answer.get("scope", ""),
                      answer["access_token"], answer.get("refresh_token"), grant_id, now,
                      now + int(answer["expires_in"]))
        if "refresh_token_expires_in" in answer:
            token.refresh_expires_at = now + int(answer["refresh_token_expires_in"])
        with self.lock:
            self.by_access[token.access_token] = token
            if token.refresh_token:
                self.by_refresh[token.refresh_token] = token

    def create_app(self) -> Flask:
        app = Flask("oauth_server")
        server = AuthorizationServer(app, query_client=self.clients_get, save_token=self._save_token)
        server.state = self
        server.register_token_generator("default", self._generate)
        server.register_grant(_CodeGrant, [_S256Only(required=True)])
        server.register_grant(_RefreshGrant)
        server.register_grant(_ClientCredentialsGrant)
        server.register_endpoint(_Revocation)
        server.register_client_auth_method("private_key_jwt", check_client_assertion)
        self._routes(app, server)
        return app

    def clients_get(self, client_id):
        return self.clients.get(client_id)

    def _admin_consent(self, tenant):
        """Microsoft's admin-consent endpoint: a tenant's admin grants the app's permissions; the
        answer names the tenant (`admin_consent=True&tenant=<id>&scope&state`)."""
        args = request.values
        client = self.clients.get(args.get("client_id", ""))
        redirect_uri = args.get("redirect_uri", "")
        if client is None or not client.check_redirect_uri(redirect_uri):
            return Response("invalid request: unknown client or redirect URI", status=400)
        if request.method == "GET":
            hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in request.args.items())
            return CONSENT_PAGE.format(client=html.escape(client.client_id), hidden=hidden,
                                       action=html.escape(request.path), scope=html.escape(args.get("scope", "")),
                                       username=html.escape(self.default_username))
        if args.get("consent") == "accept":
            with self.lock:
                self.admin_consents.append((client.client_id, self.tenant_id))
            answer = {"admin_consent": "True", "tenant": self.tenant_id, "scope": args.get("scope", "")}
        else:
            answer = {"error": "access_denied", "error_description": "AADSTS65004: User declined to consent."}
        answer["state"] = args.get("state", "")
        return Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode(answer)}"})

    def _not_consented(self, tenant: str | None) -> bool:
        return (self.require_admin_consent and tenant is not None
                and request.form.get("grant_type") == "client_credentials"
                and tenant not in {t for _, t in self.admin_consents})

    def _routes(self, app: Flask, server: AuthorizationServer):
        def authorize(tenant=None):
            if request.method == "GET":
                try:
                    grant = server.get_consent_grant(end_user=User(""))
                except OAuth2Error as error:
                    return Response(f"invalid request: {html.escape(error.error)}", status=400)
                hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                                 for k, v in request.args.items())
                username = request.args.get("login_hint") or self.default_username
                return CONSENT_PAGE.format(client=html.escape(grant.client.client_id), hidden=hidden,
                                           action=html.escape(request.path),
                                           scope=html.escape(request.args.get("scope", "")),
                                           username=html.escape(username))
            user = User(request.form.get("username") or self.default_username)
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return Response(f"invalid request: {html.escape(error.error)}", status=400)
            accepted = request.form.get("consent") == "accept"
            return server.create_authorization_response(grant_user=user if accepted else None, grant=grant)

        def token(tenant=None):
            with self.lock:
                self.token_requests.append(dict(request.form))
                failure = self.failures.pop(0) if self.failures else None
                if failure is None and self._not_consented(tenant):
                    failure = (400, {**MICROSOFT_APP_NOT_IN_TENANT, "error_description":
                                     f"AADSTS700016: Application was not found in the directory '{tenant}'."})
            if failure:
                status, body = failure
                return jsonify(body), status
            return server.create_token_response()

        def revoke():
            return server.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME)

        def introspect(token_in_path=None):
            given = token_in_path or request.values.get("token")
            auth = request.headers.get("Authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            elif auth.lower().startswith("basic "):
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                client = self.clients.get(client_id)
                if client is None or not client.check_client_secret(secret):
                    return jsonify({"error": "invalid_client"}), 401
            return jsonify(self.introspect(given or ""))

        app.add_url_rule("/authorize", "authorize", authorize, methods=["GET", "POST"])
        app.add_url_rule("/<tenant>/v2.0/adminconsent", "ms_admin_consent", self._admin_consent,
                         methods=["GET", "POST"])
        app.add_url_rule("/o/oauth2/v2/auth", "google_authorize", authorize, methods=["GET", "POST"])
        app.add_url_rule("/<tenant>/oauth2/v2.0/authorize", "ms_authorize", authorize, methods=["GET", "POST"])
        app.add_url_rule("/token", "token", token, methods=["POST"])
        app.add_url_rule("/<tenant>/oauth2/v2.0/token", "ms_token", token, methods=["POST"])
        app.add_url_rule("/revoke", "revoke", revoke, methods=["POST"])
        app.add_url_rule("/introspect", "introspect", introspect, methods=["GET", "POST"])
        app.add_url_rule("/introspect/<token_in_path>", "introspect_path", introspect, methods=["GET", "POST"])


@pytest.fixture(scope="session")
def oauth_server_session():
    state = OAuthServer()
    http = make_server("127.0.0.1", 0, state.create_app(), threaded=True)
    state.url = f"http://127.0.0.1:{http.server_port}"
    thread = threading.Thread(target=http.serve_forever, name="oauth-server", daemon=True)
    thread.start()
    yield state
    http.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def oauth_server(oauth_server_session):
    """The session's authorisation server, emptied: no client, no token, no failure queued."""
    oauth_server_session.reset()
    yield oauth_server_session
    oauth_server_session.reset()


@pytest.fixture
def microsoft_login(oauth_server, monkeypatch):
    """Microsoft's sign-in (login.microsoftonline.com) is the emptied test server, which gives a
    tenant app-only tokens only once its admin has consented there."""
    monkeypatch.setattr(providers, "MICROSOFT_LOGIN", oauth_server.url)
    oauth_server.require_admin_consent = True
    return oauth_server

"""The OAuth2 client: start and finish a sign-in (code with PKCE and state), refresh, app-only, revoke.

Nothing here stores anything: the caller keeps the `Authorisation` (state and PKCE verifier) between
the redirect and the callback, and the `Grant`'s tokens, encrypted, afterwards. Every call that
sends a request takes `reach` (transport.reach.Reach): with several MSPs, an admin-typed URL is
reached only at checked addresses. Token values are
left out of every repr so that a logged object does not leak them.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from authlib.common.security import generate_token

from portal.oauth.errors import OAuthError, translate, who
from portal.oauth.http import TIMEOUT, OAuthClient, check_url, seconds
from portal.oauth.providers import SHARED_TENANTS, TENANT, Provider

# Static consent: the admin grants every permission configured on the app registration.
ADMIN_CONSENT_SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_LIFETIME = 3600  # when a server omits expires_in (RFC 6749 5.1 allows it); both providers use 1 h
ACCOUNT_CLAIMS = ("preferred_username", "email", "upn", "unique_name")
# Drawn by Authlib's generate_token (SystemRandom over letters and digits): 64 characters hold 381
# bits (RFC 7636 allows 43 to 128); the state is never guessed at 190 bits.
VERIFIER_LENGTH = 64
STATE_LENGTH = 32


@dataclass(frozen=True)
class AppCredentials:
    """The app registration: its client id and, for a confidential client, its secret or its
    certificate (a PEM with the private key, portal.oauth.certificate), which wins when both are set."""

    client_id: str
    client_secret: str = field(default="", repr=False)
    certificate: str = field(default="", repr=False)


@dataclass(frozen=True)
class Authorisation:
    """A started sign-in: send the person to `url`, keep `state` and `verifier` for the callback."""

    url: str
    state: str
    verifier: str = field(repr=False)
    redirect_uri: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """What a token endpoint answered. `account` names the signed-in account when the server said."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""
    account: str | None = None
    token_type: str = "Bearer"
    # When the refresh token lapses, if the server says (Google does for apps in "testing" mode).
    refresh_expires_at: datetime | None = None


def start_authorisation(provider: Provider, app: AppCredentials, redirect_uri: str, scopes,
                        login_hint: str | None = None) -> Authorisation:
    """The sign-in URL with a fresh state and PKCE S256 challenge (Authlib builds both)."""
    if not provider.authorize_url:
        raise OAuthError(f"the {provider.name} provider has no authorisation URL: set it to connect a person's "
                         "mailbox", kind="config")
    check_url(provider.authorize_url)
    verifier = generate_token(VERIFIER_LENGTH)
    with OAuthClient(provider, app, redirect_uri=redirect_uri, scope=" ".join(scopes)) as client:
        url, state = client.create_authorization_url(provider.authorize_url, state=generate_token(STATE_LENGTH),
                                                     code_verifier=verifier, login_hint=login_hint,
                                                     **provider.authorize_params)
    return Authorisation(url, state, verifier, redirect_uri, tuple(scopes))


def start_admin_consent(provider: Provider, app: AppCredentials, redirect_uri: str,
                        scope: str = ADMIN_CONSENT_SCOPE) -> Authorisation:
    """Microsoft's admin-consent link for a customer's global admin (no PKCE: no code comes back).

    Built with urlencode, not Authlib: it is not an OAuth2 authorisation request (no response_type,
    no code, no PKCE), and Authlib's create_authorization_url would add response_type=code."""
    if provider.name != "microsoft":
        raise OAuthError("tenant-wide admin consent is a Microsoft feature", kind="config")
    state = generate_token(STATE_LENGTH)
    base = provider.authorize_url.rsplit("/oauth2/v2.0/", 1)[0]
    params = {"client_id": app.client_id, "scope": scope, "redirect_uri": redirect_uri, "state": state}
    return Authorisation(f"{base}/v2.0/adminconsent?{urlencode(params)}", state, "", redirect_uri, (scope,))


def _same_state(answer: dict, started: Authorisation) -> bool:
    # Bytes: compare_digest refuses str with non-ASCII characters, which a forged answer may hold.
    return hmac.compare_digest(str(answer.get("state") or "").encode(), started.state.encode())


def finish_admin_consent(provider: Provider, started: Authorisation, answer: dict) -> str:
    """The callback's query after admin consent: the consenting tenant's id."""
    if not _same_state(answer, started):
        raise OAuthError("the consent came back with a state that does not match: send a new consent link",
                         code="state", kind="refused")
    if answer.get("error"):
        raise translate(provider.name, 400, dict(answer), tenant=provider.tenant)
    tenant = str(answer.get("tenant") or "")
    if str(answer.get("admin_consent")).lower() != "true" or not TENANT.match(tenant):
        raise OAuthError("the consent came back without a tenant: send a new consent link", kind="consent")
    return tenant


def finish_authorisation(provider: Provider, app: AppCredentials, started: Authorisation, answer: dict,
                         *, timeout: float = TIMEOUT, reach=None) -> Grant:
    """The callback's query (`code`, `state`, or `error`): state checked, then the code exchanged."""
    if not _same_state(answer, started):
        raise OAuthError("the sign-in came back with a state that does not match: start connecting again",
                         code="state", kind="refused")
    if answer.get("error"):
        raise translate(provider.name, 400, dict(answer), tenant=provider.tenant)
    if not answer.get("code"):
        raise OAuthError("the sign-in came back without a code: start connecting again", kind="refused")
    return exchange_code(provider, app, answer["code"], started.redirect_uri, started.verifier,
                         scopes=started.scopes, timeout=timeout, reach=reach)


def exchange_code(provider: Provider, app: AppCredentials, code: str, redirect_uri: str, verifier: str,
                  *, scopes=(), timeout: float = TIMEOUT, reach=None) -> Grant:
    with OAuthClient(provider, app, timeout=timeout, secrets=(code, verifier), reach=reach) as client:
        body = client.fetch_token(provider.token_url, grant_type="authorization_code", code=code,
                                  redirect_uri=redirect_uri, code_verifier=verifier)
    return _grant(body, " ".join(scopes))


def refresh(provider: Provider, app: AppCredentials, refresh_token: str, scopes=(), *,
            timeout: float = TIMEOUT, reach=None) -> Grant:
    """A new access token. The refresh token in the Grant is the rotated one when the server sent
    one (save it: the old one may stop working), else the one given. Microsoft wants the scopes
    of the first sign-in again (or a subset); Google needs none."""
    with OAuthClient(provider, app, timeout=timeout, secrets=(refresh_token,), reach=reach) as client:
        # Authlib keeps the given refresh token when the answer has none.
        body = client.refresh_token(provider.token_url, refresh_token=refresh_token, scope=" ".join(scopes) or None)
    # ... and `or` keeps it too when a server answers an empty or null one.
    return _grant(body, " ".join(scopes), keep_refresh=refresh_token)


def client_credentials(provider: Provider, app: AppCredentials, scopes, *, timeout: float = TIMEOUT,
                       reach=None) -> Grant:
    """An app-only token (Microsoft: for a customer's tenant that has consented)."""
    if not provider.app_flow:
        raise OAuthError(f"{who(provider.name)} offers no app-only access with a client secret: use the delegated flow",
                         kind="config")
    if provider.name == "microsoft" and provider.tenant in SHARED_TENANTS:
        raise OAuthError("app-only access needs the customer's tenant id or domain, not "
                         f"{provider.tenant!r}", kind="config")
    if not (app.client_secret or app.certificate):
        raise OAuthError("app-only access needs the app's client secret or certificate", kind="config")
    with OAuthClient(provider, app, timeout=timeout, reach=reach) as client:
        body = client.fetch_token(provider.token_url, grant_type="client_credentials", scope=" ".join(scopes) or None)
    return _grant(body, " ".join(scopes))


def revoke(provider: Provider, app: AppCredentials, token: str, hint: str = "refresh_token", *,
           timeout: float = TIMEOUT, reach=None) -> bool:
    """RFC 7009. False when the provider has no revocation endpoint (Microsoft): forgetting the
    tokens is then all there is. A token the server no longer knows counts as revoked."""
    if not provider.revocation_url:
        return False
    with OAuthClient(provider, app, timeout=timeout, secrets=(token,), reach=reach) as client:
        answer = client.revoke_token(provider.revocation_url, token=token, token_type_hint=hint)
        try:
            client.answer(answer, empty_ok=True)  # RFC 7009 2.2: 200 with any body, or none
        except OAuthError as error:
            if error.code != "invalid_token":  # Google's answer for a token already revoked
                raise
    return True


def _grant(body: dict, requested_scope: str, keep_refresh: str | None = None) -> Grant:
    now = datetime.now(UTC).replace(microsecond=0)
    refresh_lifetime = seconds(body.get("refresh_token_expires_in"))
    return Grant(
        access_token=body["access_token"],
        expires_at=now + timedelta(seconds=seconds(body.get("expires_in")) or DEFAULT_LIFETIME),
        refresh_token=body.get("refresh_token") or keep_refresh,
        scope=str(body.get("scope") or requested_scope),
        account=account_name(body),
        token_type=str(body.get("token_type") or "Bearer"),
        refresh_expires_at=now + timedelta(seconds=refresh_lifetime) if refresh_lifetime else None,
    )


def account_name(body: dict) -> str | None:
    """The signed-in account: from the id_token's claims, else from the answer itself.

    The id_token came straight from the token endpoint over TLS, so its signature is not checked
    (OpenID Connect Core 3.1.3.7 allows this); it only names the account for the person to see."""
    claims = _id_token_claims(body.get("id_token"))
    for source in (claims, body):
        for name in (*ACCOUNT_CLAIMS, "username"):
            value = source.get(name)
            if isinstance(value, str) and value:
                return value
    return None


def _id_token_claims(id_token) -> dict:
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}

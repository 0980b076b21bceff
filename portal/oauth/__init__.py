"""OAuth2 for mailboxes: providers (Microsoft, Google, generic) and the client flows. Plain Python
(no Flask, no database); the protocol by Authlib's OAuth2 client over requests, with a timeout.

Microsoft tenants: `start_admin_consent` (a link for a customer's admin), `finish_admin_consent`
(the tenant id). Delegated: `start_authorisation` (keep its state and verifier), then `finish_authorisation` with the
callback's query. App-only: `client_credentials`. Then `refresh` (save the rotated refresh token)
and `revoke`. Every failure is an `OAuthError` in plain words with the provider's code.
"""

from portal.oauth.errors import OAuthError
from portal.oauth.flows import (
    AppCredentials,
    Authorisation,
    Grant,
    account_name,
    client_credentials,
    exchange_code,
    finish_admin_consent,
    finish_authorisation,
    refresh,
    revoke,
    start_admin_consent,
    start_authorisation,
)
from portal.oauth.providers import FLOWS, PROTOCOLS, PROVIDERS, Provider, generic, google, microsoft, provider

__all__ = [
    "FLOWS",
    "PROTOCOLS",
    "PROVIDERS",
    "AppCredentials",
    "Authorisation",
    "Grant",
    "OAuthError",
    "Provider",
    "account_name",
    "client_credentials",
    "exchange_code",
    "finish_admin_consent",
    "finish_authorisation",
    "generic",
    "google",
    "microsoft",
    "provider",
    "refresh",
    "revoke",
    "start_admin_consent",
    "start_authorisation",
]

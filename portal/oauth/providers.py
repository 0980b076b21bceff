"""The authorisation servers a mailbox can use: Microsoft (Entra ID), Google, or any other (`generic`).

Each provider knows its endpoints and the scopes a mailbox needs for what it does (IMAP, POP3,
SMTP, Graph), delegated (a person signs in once) or app-only (client credentials). `base_url`
replaces the scheme and host of every endpoint, so tests point a provider at a local server with
the same paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from portal.oauth.errors import OAuthError
from portal.transport.urls import url_refusal

PROVIDERS = ("microsoft", "google", "generic")
FLOWS = ("delegated", "app")
PROTOCOLS = ("imap", "pop3", "smtp", "graph")

MICROSOFT_LOGIN = "https://login.microsoftonline.com"
GOOGLE_ACCOUNTS = "https://accounts.google.com"
GOOGLE_TOKENS = "https://oauth2.googleapis.com"

# Exchange Online's delegated scopes are on the Outlook resource, Graph's on Graph's; one token
# is for one resource, so a mailbox asks for the scopes of the protocols it uses.
OUTLOOK = "https://outlook.office.com/"
GRAPH = "https://graph.microsoft.com/"
MICROSOFT_DELEGATED = {
    "imap": (OUTLOOK + "IMAP.AccessAsUser.All",),
    "pop3": (OUTLOOK + "POP.AccessAsUser.All",),
    "smtp": (OUTLOOK + "SMTP.Send",),
    "graph": (GRAPH + "Mail.ReadWrite", GRAPH + "Mail.Send"),
}
# Delegated Graph on a mailbox other than the signed-in account's own (a shared mailbox): Graph
# lets a delegate's token into it only with these (users can consent to them).
MICROSOFT_DELEGATED_SHARED = (GRAPH + "Mail.ReadWrite.Shared", GRAPH + "Mail.Send.Shared")
# App-only tokens carry the permissions granted to the app in the tenant (`.default`).
MICROSOFT_APP = {
    "imap": ("https://outlook.office365.com/.default",),
    "pop3": ("https://outlook.office365.com/.default",),
    "smtp": ("https://outlook.office365.com/.default",),
    "graph": (GRAPH + ".default",),
}
# offline_access brings the refresh token; openid and profile the id_token naming the account.
MICROSOFT_SIGN_IN = ("offline_access", "openid", "profile")
GOOGLE_MAIL = "https://mail.google.com/"  # the only Gmail scope that allows IMAP, POP3 and SMTP
GOOGLE_SIGN_IN = ("openid", "email")

# A tenant is a GUID, a domain, or one of Microsoft's words; it goes into a URL path.
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
SHARED_TENANTS = ("organizations", "common", "consumers")


@dataclass(frozen=True)
class Provider:
    name: str
    authorize_url: str | None
    token_url: str
    revocation_url: str | None = None
    tenant: str | None = None
    scopes: tuple[str, ...] = ()  # generic: what every grant asks for
    authorize_params: dict = field(default_factory=dict)  # extra query parameters of the sign-in
    app_flow: bool = True  # offers client credentials
    # How the app proves itself at the token endpoint: in the form (Microsoft and Google document
    # it) or HTTP Basic (RFC 6749 makes every server accept it, so generic servers get it).
    client_auth: str = "post"

    def scopes_for(self, protocols, flow: str = "delegated", *, shared: bool = False) -> list[str]:
        """The scopes a mailbox asks for, in a stable order, for the protocols it uses. `shared`:
        the mailbox is not the signed-in account's own (Microsoft Graph, delegated, asks for more)."""
        if flow not in FLOWS:
            raise OAuthError(f"unknown OAuth flow {flow!r}: use delegated or app", kind="config")
        wanted = [p for p in PROTOCOLS if p in set(protocols)]
        unknown = set(protocols) - set(PROTOCOLS)
        if unknown:
            raise OAuthError(f"unknown protocol {sorted(unknown)[0]!r}", kind="config")
        if self.name == "microsoft":
            if "graph" in wanted and len(wanted) > 1:
                # One Microsoft token is for one resource (Graph or Exchange's Outlook resource).
                raise OAuthError("a Microsoft token is for Graph or for IMAP, POP3 and SMTP, not both", kind="config")
            table = MICROSOFT_APP if flow == "app" else MICROSOFT_DELEGATED
            found = [s for p in wanted for s in table[p]]
            if flow == "delegated" and shared and "graph" in wanted:
                found += MICROSOFT_DELEGATED_SHARED
            if flow == "delegated":
                found += MICROSOFT_SIGN_IN
        elif self.name == "google":
            found = [GOOGLE_MAIL, *GOOGLE_SIGN_IN]
        else:
            found = list(self.scopes)
        return list(dict.fromkeys(found))


def _base(given: str | None, default: str) -> str:
    return (given or default).rstrip("/")


def microsoft(tenant: str = "organizations", base_url: str | None = None) -> Provider:
    """Entra ID's v2.0 endpoints for a tenant (GUID or domain) or `organizations` (any work account)."""
    tenant = (tenant or "organizations").strip()
    if not TENANT.match(tenant):
        raise OAuthError(f"the Microsoft tenant {tenant!r} is neither a tenant id nor a domain", kind="config")
    root = f"{_base(base_url, MICROSOFT_LOGIN)}/{tenant}/oauth2/v2.0"
    # Entra ID has no RFC 7009 endpoint: a grant ends by forgetting its tokens (or revoking the
    # user's sessions in Entra); select_account lets an MSP technician pick the mailbox's account.
    return Provider("microsoft", f"{root}/authorize", f"{root}/token", None, tenant,
                    authorize_params={"prompt": "select_account"})


def google(base_url: str | None = None) -> Provider:
    """Google's endpoints. Gmail has no app-only flow for a client id and secret."""
    accounts = _base(base_url, GOOGLE_ACCOUNTS)
    tokens = _base(base_url, GOOGLE_TOKENS)
    # access_type=offline brings a refresh token; prompt=consent brings one again on reconnect.
    return Provider("google", f"{accounts}/o/oauth2/v2/auth", f"{tokens}/token", f"{tokens}/revoke",
                    authorize_params={"access_type": "offline", "prompt": "consent"}, app_flow=False)


def generic(token_url: str, authorize_url: str | None = None, revocation_url: str | None = None,
            scopes=()) -> Provider:
    """Any other OAuth2 server: its URLs and the scopes to ask for, as the admin typed them."""
    for url in (token_url, authorize_url, revocation_url):
        if url and (refusal := url_refusal(url)):
            raise OAuthError(refusal, kind="config")
    if not token_url:
        raise OAuthError("a generic OAuth provider needs its token URL", kind="config")
    if isinstance(scopes, str):
        scopes = scopes.split()
    return Provider("generic", authorize_url, token_url, revocation_url, scopes=tuple(scopes), client_auth="basic")


def provider(name: str, *, tenant: str | None = None, base_url: str | None = None, token_url: str | None = None,
             authorize_url: str | None = None, revocation_url: str | None = None, scopes=()) -> Provider:
    """The provider a mailbox's `oauth:` settings name."""
    if name == "microsoft":
        return microsoft(tenant or "organizations", base_url)
    if name == "google":
        return google(base_url)
    if name == "generic":
        return generic(token_url or "", authorize_url, revocation_url, scopes)
    raise OAuthError(f"unknown OAuth provider {name!r}: use microsoft, google or generic", kind="config")

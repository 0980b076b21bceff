"""Connecting a mailbox to its account (delegated OAuth2): the start, the callback's end, and
disconnecting. The protocol is portal.oauth's; the started sign-in waits in oauth_states and the
grant is kept by mailbox_oauth. Flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from portal.models import Mailbox, User
from portal.oauth import AppCredentials, OAuthError, Provider
from portal.oauth import finish_authorisation, provider, revoke, start_authorisation
from portal.outbound.servers import own_server
from portal.services import audit, oauth_states
from portal.services import mailbox_oauth as oauth_svc

CALLBACK_PATH = "/oauth/callback"


def redirect_uri(portal_url: str) -> str:
    """The one address every provider sends people back to (registered in each app)."""
    return portal_url.rstrip("/") + CALLBACK_PATH


def app_credentials(mailbox: Mailbox, keys: str) -> tuple[Provider, AppCredentials]:
    # Stand-in for services.mailbox_tokens.app_credentials (same shape) until that lands.
    row = mailbox.oauth
    found = provider(row.provider, tenant=row.tenant, token_url=row.token_url, authorize_url=row.authorize_url,
                     scopes=row.scopes or ())
    return found, AppCredentials(row.client_id, oauth_svc.client_secret_of(row, keys) or "")


def protocols_of(mailbox: Mailbox) -> list[str]:
    """What the token is for: the mailbox's protocol, and SMTP when its own outgoing server signs
    in with OAuth2 (Graph sends through Graph)."""
    if mailbox.protocol == "graph":
        return ["graph"]
    found = [mailbox.protocol]
    server = own_server(mailbox)
    if server is not None and getattr(server, "auth", None) == "oauth2":  # the column comes with SMTP OAuth2
        found.append("smtp")
    return found


def scopes_of(mailbox: Mailbox, found: Provider) -> list[str]:
    """The scopes the admin set, else the provider's for what the mailbox does."""
    if mailbox.oauth.scopes:
        return list(mailbox.oauth.scopes)
    return found.scopes_for(protocols_of(mailbox), "delegated")


def connect_problem(mailbox: Mailbox) -> str | None:
    """Why this mailbox has nothing to connect, or None."""
    if mailbox.auth != "oauth2" or mailbox.oauth is None:
        return "This mailbox signs in with a password: there is nothing to connect."
    if mailbox.oauth.flow != "delegated":
        return "This mailbox signs in as the app (client credentials): no one needs to sign in for it."
    return None


def sign_in_origin(mailbox: Mailbox, keys: str) -> str | None:
    """Where Connect sends the browser (scheme://host[:port]), for the page's form-action."""
    if connect_problem(mailbox):
        return None
    try:
        found, _app = app_credentials(mailbox, keys)
    except OAuthError:
        return None
    parts = urlsplit(found.authorize_url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("https", "http") and parts.netloc else None


def start_connect(mailbox: Mailbox, keys: str, user: User, portal_url: str) -> str:
    """The provider's sign-in address for this mailbox's account; the started sign-in is kept
    for the callback. Raises OAuthError (config) when the settings cannot start one."""
    if problem := connect_problem(mailbox):
        raise OAuthError(problem, kind="config")
    found, app = app_credentials(mailbox, keys)
    started = start_authorisation(found, app, redirect_uri(portal_url), scopes_of(mailbox, found),
                                  login_hint=mailbox.username or None)
    oauth_states.remember("mailbox", msp_id=mailbox.msp_id, user_id=user.id, subject_id=mailbox.id,
                          authorisation=started)
    return started.url


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def finish_connect(mailbox: Mailbox, keys: str, started: oauth_states.StartedSignIn, answer: dict,
                   actor: User) -> Outcome:
    """The callback's query: the code exchanged and the grant stored, or the reason in plain
    words (nothing stored)."""
    if problem := connect_problem(mailbox):
        return Outcome(False, problem)
    found, app = app_credentials(mailbox, keys)
    try:
        grant = finish_authorisation(found, app, started.authorisation, answer)
    except OAuthError as error:
        return Outcome(False, f"Not connected: {error.message}.")
    if not grant.refresh_token:
        # Without one the mailbox would stop working within the hour, silently.
        return Outcome(False, "Not connected: the provider gave no refresh token (ask for offline access: "
                              "offline_access at Microsoft, access_type=offline at Google).")
    oauth_svc.store_grant(mailbox.oauth, keys, access_token=grant.access_token, access_expires_at=grant.expires_at,
                          refresh_token=grant.refresh_token, account=grant.account,
                          grant_expires_at=grant.refresh_expires_at, actor=actor)
    return Outcome(True, f"Connected to {grant.account or 'the account'}.")


def disconnect(mailbox: Mailbox, keys: str, actor: User) -> Outcome:
    """Revoke the refresh token where the provider can, then forget the grant whatever it said."""
    row = mailbox.oauth
    if row is None or not oauth_svc.has_grant(row):
        return Outcome(True, f"{mailbox.address} was not connected.")
    note, refused = "", False
    refresh_token = oauth_svc.refresh_token_of(row, keys)
    found, app = app_credentials(mailbox, keys)
    if refresh_token and found.revocation_url:
        try:
            revoke(found, app, refresh_token)
        except OAuthError as error:
            refused = True
            note = f" The provider did not confirm the revocation ({error.message}); the grant is forgotten here all the same."
    elif found.name == "microsoft":
        note = (" Microsoft cannot revoke a single grant: to end it there too, revoke the account's sessions "
                "in Entra ID.")
    before = oauth_svc.grant_label(row)
    oauth_svc.drop_grant(row)
    changes: dict[str, list] = {"oauth.grant": [before, oauth_svc.grant_label(row)]}
    if note:
        changes["revocation"] = [None, note.strip()]
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "OAuth2 disconnected", changes)
    return Outcome(not refused, f"Disconnected {mailbox.address}.{note}")

"""Connecting a mailbox to its account (delegated OAuth2): the start, the callback's end, and
disconnecting. The protocol is portal.oauth's; the started sign-in waits in oauth_states and the
grant is kept by mailbox_oauth. Flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from portal.models import Mailbox, User
from portal.oauth import OAuthError, finish_authorisation, revoke, start_authorisation
from portal.services import audit, oauth_states
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailbox_tokens import app_credentials, provider_of, token_scopes
from portal.services.mailboxes import server_reach

def connect_problem(mailbox: Mailbox) -> str | None:
    """Why this mailbox has nothing to connect, or None."""
    if mailbox.auth != "oauth2" or mailbox.oauth is None:
        return "This mailbox signs in with a password: there is nothing to connect."
    if mailbox.oauth.flow != "delegated":
        return "This mailbox signs in as the app (client credentials): no one needs to sign in for it."
    return None


def sign_in_origin(mailbox: Mailbox) -> str | None:
    """Where Connect sends the browser (scheme://host[:port]), for the page's form-action: from the
    settings alone, as every view of the mailbox page asks (no secret is decrypted)."""
    if connect_problem(mailbox):
        return None
    try:
        found = provider_of(mailbox.oauth)
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
    started = start_authorisation(found, app, oauth_states.redirect_uri(portal_url), token_scopes(mailbox, found),
                                  login_hint=mailbox.username or None)
    oauth_states.remember("mailbox", msp_id=mailbox.msp_id, user_id=user.id, subject_id=mailbox.id,
                          authorisation=started, app_id=app.client_id)
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
        grant = finish_authorisation(found, app, started.authorisation, answer, reach=server_reach(actor))
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
    try:
        found, app = app_credentials(mailbox, keys)
        if refresh_token and found.revocation_url:
            revoke(found, app, refresh_token, reach=server_reach(actor))
    except OAuthError as error:
        refused = True
        note = (f" The provider did not confirm the revocation ({error.message}); the grant is forgotten "
                "here all the same.")
    else:
        if found.name == "microsoft":
            note = (" Microsoft cannot revoke a single grant: to end it there too, revoke the account's sessions "
                    "in Entra ID.")
    before = oauth_svc.grant_label(row)
    oauth_svc.drop_grant(row)
    changes: dict[str, list] = {"oauth.grant": [before, oauth_svc.grant_label(row)]}
    if note:
        changes["revocation"] = [None, note.strip()]
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, "OAuth2 disconnected", changes)
    return Outcome(not refused, f"Disconnected {mailbox.address}.{note}")

"""A mailbox's OAuth2 access token, fresh whenever a connection needs one.

The token is refreshed shortly before it expires: a delegated grant by its refresh token (the
rotated one the provider answers is stored at once, as the old one may stop working), an app by
client credentials. A grant the provider refuses (revoked, expired, a wrong or expired client
secret, consent missing, wrong tenant) turns into "reconnect needed" with the provider's words,
and is not sent to the provider again until someone reconnects the mailbox. Flush, never commit:
callers commit the refreshed grant before a login can fail and roll back (inbound.fetch).

Two jobs may refresh the same grant at once (a fetch and a send): the second waits on the
grant's row and takes the token the first one stored, instead of spending a refresh token the
first one already rotated away.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text

from portal import oauth
from portal.extensions import db
from portal.models import Mailbox, MailboxOAuth, SmtpServer, User
from portal.models.base import utcnow
from portal.oauth import AppCredentials, OAuthError, Provider
from portal.services import app_certificate, mailbox_oauth, tenant_consent
from portal.transport.base import TransportError

# Refreshed this long before it expires: a login, and a fetch after it, must not outlive it.
REFRESH_AHEAD = timedelta(minutes=5)
# The provider's answers that only an admin or a new sign-in can mend (portal.oauth.errors kinds).
REFUSED_GRANT = frozenset({"reconnect", "client_secret", "consent", "tenant"})


def app_credentials(mailbox: Mailbox, keys: str) -> tuple[Provider, AppCredentials]:
    """The provider and app registration a mailbox's tokens come from. Raises OAuthError (kind
    config) when the mailbox has no usable OAuth2 settings."""
    row = mailbox.oauth
    if row is None:
        raise OAuthError(f"{mailbox.address} has no OAuth2 settings (provider, client id)", kind="config")
    tenant, app = row.tenant, AppCredentials(row.client_id, mailbox_oauth.client_secret_of(row, keys) or "",
                                             app_certificate.pem_of(row, keys))
    if row.provider == "microsoft" and row.flow == "app" and not (row.tenant and row.client_id):
        tenant, app = _borrowed_app(mailbox, tenant, app, keys)
    return provider_of(row, tenant), app


def provider_of(row: MailboxOAuth, tenant: str | None = None) -> Provider:
    """The provider of a mailbox's OAuth2 settings (in `tenant` instead of its own when given),
    from what the admin typed: no secret is read. Raises OAuthError (config) for a wrong setting."""
    return oauth.provider(row.provider, tenant=tenant or row.tenant, token_url=row.token_url,
                          authorize_url=row.authorize_url, scopes=row.scopes or ())


def _borrowed_app(mailbox: Mailbox, tenant: str | None, app: AppCredentials,
                  keys: str) -> tuple[str | None, AppCredentials]:
    """An app-only Microsoft mailbox without a client id of its own signs in as its MSP's
    Microsoft 365 app; without a tenant, in the tenant its client's customer consented from."""
    fallback = tenant_consent.app_fallback(mailbox.client, keys)
    if not app.client_id:
        if fallback.app is None:
            raise OAuthError(f"{mailbox.address} has no client id of its own and its MSP has no Microsoft 365 app: "
                             "enter the app on Settings › Microsoft 365", kind="config")
        app = fallback.app
    if not tenant:
        if fallback.tenant is None:
            raise OAuthError(f"{mailbox.address} has no tenant of its own and {mailbox.client.name} is not connected "
                             "to a Microsoft 365 tenant: send the customer's admin the consent link from the "
                             "client's page", kind="config")
        tenant = fallback.tenant
    return tenant, app


def token_protocols(mailbox: Mailbox) -> list[str]:
    """What the mailbox's token is used for: its own protocol, and SMTP when its own outgoing
    server signs in with the grant."""
    protocols = [mailbox.protocol]
    if mailbox.protocol != "graph" and mailbox.id is not None and db.session.scalar(
            select(SmtpServer.auth).where(SmtpServer.mailbox_id == mailbox.id)) == "oauth2":
        protocols.append("smtp")
    return protocols


def token_scopes(mailbox: Mailbox, provider: Provider) -> list[str]:
    """The scopes a grant of this mailbox asks for: the admin's, else the provider's defaults for
    what the mailbox does (connecting asks for the same ones)."""
    row = mailbox.oauth
    if row is not None and row.scopes:
        return list(row.scopes)
    return provider.scopes_for(token_protocols(mailbox), row.flow if row is not None else "delegated",
                               shared=opens_another_mailbox(mailbox))


def opens_another_mailbox(mailbox: Mailbox) -> bool:
    """Whether the mailbox opened is not the signing-in account's own, as its settings say: a shared
    mailbox, or a user name (the account) other than its address. Not the account a sign-in
    named: a user name (UPN) may differ from the address of the same mailbox."""
    if mailbox.shared_mailbox:
        return mailbox.shared_mailbox.strip().lower() != (mailbox.username or "").strip().lower()
    username = (mailbox.username or "").strip().lower()
    return bool(username) and username != (mailbox.address or "").strip().lower()


def _fresh(row: MailboxOAuth, keys: str, now: datetime) -> str | None:
    """The stored access token when it is good for a while yet."""
    if row.state != "connected" or row.access_token_encrypted is None or row.access_token_expires_at is None:
        return None
    if row.access_token_expires_at <= now + REFRESH_AHEAD:
        return None
    return mailbox_oauth.access_token_of(row, keys)


def _hold_grant(row: MailboxOAuth) -> None:
    """Until this transaction ends, no other job refreshes this grant; then read it again, as the
    job we waited for may have stored a fresh token. PostgreSQL: the row's lock; SQLite: a write,
    which takes the database's write lock."""
    if row.id is None:
        return  # not stored yet: nobody else can hold it
    db.session.flush()  # the refresh below reads the row again: what this session changed goes first
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.execute(text("UPDATE mailbox_oauth SET id = id WHERE id = :id"), {"id": row.id})
    db.session.refresh(row, with_for_update=True)


def _refused(mailbox: Mailbox, row: MailboxOAuth, error: OAuthError, actor: User | None) -> TransportError:
    """The TransportError a failed token request means; a refused grant needs reconnecting."""
    if error.kind in REFUSED_GRANT:
        mailbox_oauth.reconnect_needed(row, error.message, actor=actor)
        return TransportError("auth", f"the sign-in service refused the OAuth2 grant of {mailbox.address}: "
                                      f"{error.message}", transient=False)
    if error.temporary:
        return TransportError("connect", f"no access token for {mailbox.address}: {error.message}", transient=True)
    return TransportError("auth", f"no access token for {mailbox.address}: {error.message}", transient=False)


def _not_usable(mailbox: Mailbox, row: MailboxOAuth | None) -> TransportError | None:
    """Why the mailbox cannot get a token without someone's help, or None."""
    if mailbox.auth != "oauth2" or row is None:
        return TransportError("auth", f"{mailbox.address} does not sign in with OAuth2", transient=False)
    if row.state == "reconnect needed":
        because = f" ({row.state_reason})" if row.state_reason else ""
        return TransportError("auth", f"{mailbox.address} needs reconnecting: its OAuth2 grant was refused"
                                      f"{because}. Reconnect it on the mailbox page.", transient=False)
    if row.flow != "app" and row.state != "connected":
        return TransportError("auth", f"{mailbox.address}: {mailbox_oauth.NOT_CONNECTED}", transient=False)
    return None


def access_token(mailbox: Mailbox, keys: str, *, now: datetime | None = None, reach=None) -> str:
    """A valid access token for an oauth2 mailbox, refreshed when missing or expiring within five
    minutes. `reach` (transport.reach.Reach) holds the token request to checked addresses.
    Raises TransportError: auth (not transient) when someone must act, connect (transient) when
    the sign-in service could not be reached or failed for now."""
    now = now or utcnow()
    row = mailbox.oauth
    if (problem := _not_usable(mailbox, row)) is not None:
        raise problem
    if (token := _fresh(row, keys, now)) is not None:
        return token
    _hold_grant(row)
    if (token := _fresh(row, keys, now)) is not None:
        return token  # refreshed by the job we waited for
    if (problem := _not_usable(mailbox, row)) is not None:
        raise problem
    return _new_token(mailbox, row, keys, reach=reach)


def connect_app(mailbox: Mailbox, keys: str, *, reach=None, actor: User | None = None) -> str:
    """The app flow's Connect (nobody signs in): a token by client credentials now, whatever the
    grant's state, so that a refusal an admin has mended (a new client secret, the tenant's
    consent) is tried again. Raises TransportError as access_token does."""
    row = mailbox.oauth
    if mailbox.auth != "oauth2" or row is None or row.flow != "app":
        raise TransportError("auth", f"{mailbox.address} does not use the app flow: connect it by signing in",
                             transient=False)
    _hold_grant(row)
    return _new_token(mailbox, row, keys, reach=reach, actor=actor)


def _new_token(mailbox: Mailbox, row: MailboxOAuth, keys: str, *, reach=None, actor: User | None = None) -> str:
    """A token from the provider (refresh, or client credentials), stored; the grant held."""
    refresh_token = mailbox_oauth.refresh_token_of(row, keys)
    if row.flow != "app" and refresh_token is None:
        raise TransportError("auth", f"{mailbox.address}: its access token expired and the grant has no refresh "
                                     "token. Reconnect it on the mailbox page.", transient=False)
    try:
        provider, app = app_credentials(mailbox, keys)
        scopes = token_scopes(mailbox, provider)
        if row.flow == "app":
            grant = oauth.client_credentials(provider, app, scopes, reach=reach)
        else:
            grant = oauth.refresh(provider, app, refresh_token, scopes, reach=reach)
    except OAuthError as error:
        raise _refused(mailbox, row, error, actor) from None
    mailbox_oauth.store_grant(row, keys, access_token=grant.access_token, access_expires_at=grant.expires_at,
                              refresh_token=grant.refresh_token if row.flow != "app" else None,
                              grant_expires_at=grant.refresh_expires_at, actor=actor)
    return grant.access_token

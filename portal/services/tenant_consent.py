"""A customer's Microsoft 365 tenant consents to its MSP's app (services.microsoft_app), once, by
Microsoft's admin-consent link: the MSP creates the link on the client's page and emails it to the
customer's global admin, who opens it, signs in and accepts; Microsoft sends the browser back to
the portal's one OAuth callback with the tenant's id. Then app-only Microsoft mailboxes of that
client (and of its sub-clients) need neither a tenant nor an app of their own. Flush, never commit.

The customer's admin is no portal user: the started consent (services.oauth_states, purpose
"tenant consent") is not bound to a session, lasts a week, and is taken once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.models import Client, Mailbox, MailboxOAuth, TenantConsent, User
from portal.models.base import utcnow
from portal.oauth import (
    AppCredentials,
    OAuthError,
    client_credentials,
    finish_admin_consent,
    microsoft,
    start_admin_consent,
)
from portal.services import ValidationError, audit, grant_state, oauth_states
from portal.services.clients import get_client
from portal.services.exchange_powershell import powershell
from portal.services.microsoft_app import credentials, msp_microsoft_app

PURPOSE = "tenant consent"
NO_APP = ("Enter your MSP's Microsoft 365 app first (Settings › Microsoft 365): the consent link asks the "
          "customer's admin to grant that app.")


@dataclass(frozen=True)
class ConsentLink:
    url: str
    expires_at: datetime


def create_consent_link(client: Client, *, actor: User, portal_url: str, base_url: str | None = None,
                        connection=None) -> ConsentLink:
    """A fresh admin-consent link for this client's customer, valid once within a week. In the
    client's history (the link itself is not: whoever has it can use it)."""
    app = msp_microsoft_app(client.msp_id)
    if app is None:
        raise ValidationError({"": [NO_APP]})
    started = start_admin_consent(microsoft("organizations", base_url), AppCredentials(app.client_id),
                                  oauth_states.redirect_uri(portal_url))
    oauth_states.remember(PURPOSE, msp_id=client.msp_id, user_id=actor.id, subject_id=client.id,
                          authorisation=started, app_id=app.client_id, connection=connection)
    audit.record(actor, client.msp_id, "client", client.id, "Microsoft 365 consent link created",
                 {"app": [None, app.client_id]})
    return ConsentLink(started.url, utcnow() + timedelta(seconds=oauth_states.LIFETIMES[PURPOSE]))


@dataclass(frozen=True)
class ConsentDone:
    """What the customer's admin is told: their tenant is connected to the MSP, for this client;
    or, with `problem`, why not (nothing stored then)."""

    msp_name: str  # whom to ask for a new link
    client_name: str = ""
    tenant: str | None = None
    problem: str | None = None


def finish_tenant_consent(started: oauth_states.StartedSignIn, query: Mapping[str, str], keys: str) -> ConsentDone:
    """The callback of a consent link (its state already taken): the tenant, once Microsoft has
    confirmed it, is stored on the client and in its history; or the problem in plain words
    (declined, no tenant, not confirmed, the client gone), and nothing is stored."""
    msp = db.session.get(Client, started.msp_id)
    msp_name = msp.name if msp is not None else "your service provider"
    client = get_client(started.msp_id, started.subject_id)
    try:
        if client is None:
            raise OAuthError("the client this consent link was made for no longer exists: ask your service "
                             "provider for a new link", kind="config")
        tenant = finish_admin_consent(microsoft("organizations"), started.authorisation, dict(query))
        _confirm(client, tenant, started.app_id, keys)
    except OAuthError as error:
        return ConsentDone(msp_name, problem=error.message)
    _store_consent(client, tenant, started)
    return ConsentDone(msp_name, client_name=client.name, tenant=tenant)


def _confirm(client: Client, tenant: str, app_id: str, keys: str) -> None:
    """The query's tenant and admin_consent come from the browser, so anyone holding the link could
    name another tenant: Microsoft is asked for an app-only token in that tenant with the MSP's
    app (secret or certificate), which it gives only once the tenant has consented. Raises
    OAuthError with Microsoft's reason."""
    app = msp_microsoft_app(client.msp_id)
    if app is None or app.client_id.lower() != app_id.lower():
        raise OAuthError("your service provider's Microsoft 365 app changed after this link was made: ask "
                         "your service provider for a new link", kind="config")
    found = microsoft(tenant)
    try:
        client_credentials(found, credentials(app, keys), found.scopes_for(["graph"], "app"))
    except OAuthError as error:
        raise OAuthError(f"Microsoft did not confirm it for the tenant {tenant}: {error.message}",
                         kind=error.kind) from None


def _store_consent(client: Client, tenant: str, started: oauth_states.StartedSignIn) -> None:
    app_id = started.app_id
    row = db.session.scalar(select(TenantConsent).where(TenantConsent.client_id == client.id))
    before = row.tenant if row is not None else None
    if row is None:
        row = TenantConsent(msp_id=client.msp_id, client_id=client.id, tenant=tenant, app_id=app_id)
        db.session.add(row)
    row.tenant, row.app_id, row.consented_at = tenant, app_id, utcnow()
    entry = audit.record(None, client.msp_id, "client", client.id, "Microsoft 365 tenant consented",
                         {"tenant": [before, tenant], "app": [None, app_id]})
    creator = db.session.get(User, started.user_id)
    # Not a portal user, and not the command line: the customer's admin who opened the link.
    entry.actor_label = "customer's admin" + (f" (link from {creator.email})" if creator else "")
    db.session.flush()
    grant_state.try_again([m.oauth for m in _borrowing_tenant(client.msp_id) if consent_of(m.client) is row],
                          f"the customer's admin consented from the tenant {tenant}")


def _borrowing_tenant(msp_id: int) -> list[Mailbox]:
    """The MSP's app-only Microsoft mailboxes without a tenant of their own (they use a consent)."""
    return [m for m in db.session.scalars(select(Mailbox).join(MailboxOAuth, MailboxOAuth.mailbox_id == Mailbox.id)
                                          .where(Mailbox.msp_id == msp_id, MailboxOAuth.provider == "microsoft",
                                                 MailboxOAuth.flow == "app"))
            if not m.oauth.tenant]


def consent_of(client: Client) -> TenantConsent | None:
    """The consent this client's app-only mailboxes use: its own, else the nearest ancestor's
    below the MSP (a department shares its customer's tenant; a customer never the MSP's own)."""
    chain = tenancy.lineage(client)
    if len(chain) > 1:
        chain = chain[:-1]
    rows = {r.client_id: r for r in db.session.scalars(
        select(TenantConsent).where(TenantConsent.msp_id == client.msp_id,
                                    TenantConsent.client_id.in_([c.id for c in chain])))}
    return next((rows[c.id] for c in chain if c.id in rows), None)


def consented_tenant(client: Client) -> str | None:
    """The tenant id for app-only access with the MSP's app, or None: no consent, or one given
    to another app than the MSP's current one (the customer's admin must consent again)."""
    row = consent_of(client)
    app = msp_microsoft_app(client.msp_id)
    if row is None or app is None or row.app_id.lower() != app.client_id.lower():
        return None
    return row.tenant


@dataclass(frozen=True)
class AppFallback:
    """What an app-only Microsoft mailbox without a tenant or client id of its own uses."""

    tenant: str | None  # None: no usable consent
    app: AppCredentials | None  # None: the MSP has no Microsoft 365 app


def app_fallback(client: Client, keys: str | None = None) -> AppFallback:
    """The MSP's app (with its secret when `keys` are given) and the client's consented tenant."""
    row = msp_microsoft_app(client.msp_id)
    app = None
    if row is not None:
        app = credentials(row, keys) if keys else AppCredentials(row.client_id)
    return AppFallback(tenant=consented_tenant(client), app=app)


def missing_for_app_only(client: Client, *, has_client_id: bool, has_tenant: bool) -> dict[str, str]:
    """What an app-only Microsoft mailbox of this client lacks, by oauth setting, in plain words."""
    fallback = app_fallback(client)
    problems = {}
    if not has_client_id and fallback.app is None:
        problems["client_id"] = ("Give the app's client id, or enter your MSP's Microsoft 365 app on "
                                 "Settings › Microsoft 365 for every app-only mailbox to use.")
    if not has_tenant and fallback.tenant is None:
        problems["tenant"] = ("Microsoft needs the customer's tenant: its id or a domain such as "
                              f"contoso.onmicrosoft.com; or have {client.name}'s global admin open the consent "
                              "link from the client's page, and leave it empty.")
    return problems


def app_only_mailboxes(client: Client) -> list[Mailbox]:
    """This client's Microsoft mailboxes that sign in as the app: the PowerShell lines name them."""
    return [m for m in db.session.scalars(select(Mailbox).where(Mailbox.msp_id == client.msp_id,
                                                                Mailbox.client_id == client.id)
                                          .order_by(Mailbox.address))
            if m.auth == "oauth2" and m.oauth is not None and m.oauth.provider == "microsoft" and m.oauth.flow == "app"]


@dataclass(frozen=True)
class Overview:
    """The client page's "Microsoft 365 consent" section."""

    app_id: str | None  # the MSP's app; None: not entered yet
    consent: TenantConsent | None  # this client's, or the ancestor's it uses
    consent_client: Client | None  # whose consent it is
    tenant: str | None  # what app-only mailboxes use; None with a consent: given to another app
    mailboxes: list[Mailbox]
    script: str  # the PowerShell for the customer's admin


def overview(client: Client) -> Overview:
    app = msp_microsoft_app(client.msp_id)
    row = consent_of(client)
    mailboxes = app_only_mailboxes(client)
    owner = db.session.get(Client, row.client_id) if row is not None else None
    # The mailbox an app-only sign-in opens: the shared mailbox, else the user name, else the address.
    names = [m.shared_mailbox or m.username or m.address for m in mailboxes]
    msp = db.session.get(Client, client.msp_id)
    script = powershell(app.client_id, msp.name, names) if app is not None else ""
    return Overview(app.client_id if app else None, row, owner, consented_tenant(client), mailboxes, script)

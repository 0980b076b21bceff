"""A mailbox's sign-in by OAuth2: the app settings (validated per field), their secrets, and the
grant with its state. Talking to the provider is portal.oauth's work; this module stores what the
admin types and what the provider gave. Flush, never commit.

Secrets (client secret, refresh and access token) are Fernet tokens (portal.crypto) like the
mailbox password; the history says "(set)" or "(changed)", never a value.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.models import Client, Mailbox, MailboxOAuth, User
from portal.models.base import utcnow
from portal.models.mailboxes import AUTH_METHODS, GRAPH_API_URL, OAUTH_FLOWS, OAUTH_PROVIDERS
from portal.services import app_certificate, checked_date
from portal.services.grant_state import grant_label, record, set_state
from portal.services.tenant_consent import missing_for_app_only
from portal.transport.urls import url_refusal

# The keys of the `oauth` mapping, in the configuration file and in save_mailbox's values.
OAUTH_KEYS = ("provider", "flow", "tenant", "client_id", "client_secret", "secret_expires", "token_url",
              "authorize_url", "scopes", "certificate")
# The ones stored encrypted, never read back into a form or a snapshot.
SECRET_KEYS = ("client_secret", "certificate")
# Tokens are issued to one app of one provider (and tenant): another one makes them worthless here.
APP_IDENTITY = ("provider", "tenant", "client_id", "token_url")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
NOT_CONNECTED = ("It signs in with OAuth2 and is not connected: connect it to its account first "
                 "(the Connect button on the mailbox page).")


class _Missing:
    """`oauth` left out of the values: the stored settings stay as they are."""


MISSING = _Missing()


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _current(row: MailboxOAuth | None) -> dict[str, Any]:
    if row is None:
        return {"flow": "delegated", "scopes": []}
    return {k: getattr(row, k) for k in OAUTH_KEYS if k not in SECRET_KEYS}


def check_auth(values: dict[str, Any], out: dict[str, Any], mailbox: Mailbox | None, errors: dict) -> None:
    """auth, api_url and protocol graph, in `out` (the cleaned settings) as save_mailbox sets them."""
    protocol = out.get("protocol", mailbox.protocol if mailbox else "imap")
    auth = out.get("auth", mailbox.auth if mailbox else "password")
    if "auth" in values and values["auth"] not in AUTH_METHODS:
        errors.setdefault("auth", []).append(f"{values['auth']!r} is not one of {', '.join(AUTH_METHODS)}.")
    if protocol != "graph":
        if (values.get("api_url") or "").strip():
            errors.setdefault("api_url", []).append("Only a Graph mailbox (protocol graph) has an API URL.")
        if "api_url" in values or "protocol" in values:
            out["api_url"] = None
        return
    if auth != "oauth2":
        errors.setdefault("auth", []).append("Microsoft Graph signs in with OAuth2 only: set auth to oauth2.")
    if (values.get("host") or "").strip():
        errors.setdefault("host", []).append("A Graph mailbox has no server host: it is reached through api_url.")
    # Graph is HTTPS to api_url; the columns of a mail server keep neutral values.
    out.update(host="", port=443, security="ssl")
    api_url = (values.get("api_url") or "").strip() if "api_url" in values else (mailbox.api_url if mailbox else None)
    api_url = (api_url or GRAPH_API_URL).rstrip("/")
    if problem := url_refusal(api_url):
        errors.setdefault("api_url", []).append(problem)
    out["api_url"] = api_url


def checked_oauth(given: Any, mailbox: Mailbox | None, out: dict[str, Any], errors: dict,
                  client: Client | None = None) -> dict[str, Any] | None:
    """The OAuth2 settings the mailbox will have (the stored ones updated by the keys `given` holds),
    or None when it has none. Messages go under "oauth.<key>". `out` holds the cleaned mailbox
    settings (auth, protocol). A client secret left empty keeps the stored one. `client`: the
    mailbox's (new) client, whose consented tenant and MSP app an app-only Microsoft mailbox may use."""
    row = mailbox.oauth if mailbox is not None else None
    client = client if client is not None else (mailbox.client if mailbox is not None else None)
    auth = out.get("auth", mailbox.auth if mailbox else "password")
    protocol = out.get("protocol", mailbox.protocol if mailbox else "imap")
    if given is MISSING or given is None:
        if row is None:
            if auth == "oauth2":
                errors.setdefault("oauth", []).append(
                    "auth oauth2 needs the OAuth2 settings: provider, client_id, and what the provider asks for.")
            return None
        given = {}  # the stored settings, checked again against the mailbox's protocol and auth
    if not isinstance(given, dict):
        errors.setdefault("oauth", []).append("The OAuth2 settings are a mapping (provider, flow, client_id, ...).")
        return None
    unknown = sorted(str(k) for k in given if k not in OAUTH_KEYS)
    if unknown:
        errors.setdefault("oauth", []).append(f"Unknown OAuth2 settings: {', '.join(unknown)}. "
                                              f"Known: {', '.join(OAUTH_KEYS)}.")
    merged = {**_current(row), **{k: v for k, v in given.items() if k not in SECRET_KEYS}}
    borrowed, hints = _borrowed(merged, client)
    clean = _checked_app(merged, errors, borrowed, hints)
    secret = given.get("client_secret")
    clean["client_secret"] = str(secret) if secret not in (None, "") else None
    clean["certificate"] = app_certificate.checked(given.get("certificate"), errors, "oauth.certificate")
    if "tenant" in given and clean["provider"] != "microsoft" and _text(given["tenant"]):
        errors.setdefault("oauth.tenant", []).append("Only Microsoft has a tenant; leave it out for this provider.")
    if clean["provider"] != "microsoft":
        clean["tenant"] = None
    has_secret = bool(clean["client_secret"] or clean["certificate"][1]) or (row is not None and (
        row.client_secret_encrypted is not None or row.certificate_encrypted is not None))
    if clean["flow"] == "app" and not has_secret and "client_id" not in borrowed:
        errors.setdefault("oauth.client_secret", []).append(
            "The app flow (client credentials) needs the app's client secret or certificate.")
    if auth == "oauth2" and protocol == "graph" and clean["provider"] != "microsoft":
        errors.setdefault("oauth.provider", []).append("Microsoft Graph works with provider microsoft only.")
    return clean


def _borrowed(merged: dict[str, Any], client: Client | None) -> tuple[set[str], dict[str, str]]:
    """The settings an app-only Microsoft mailbox leaves empty and takes from elsewhere: the client
    id (and secret) from its MSP's Microsoft 365 app, the tenant from its client's consent; and,
    for those that cannot be taken, what is missing in plain words."""
    if merged.get("provider") != "microsoft" or (merged.get("flow") or "delegated") != "app" or client is None:
        return set(), {}
    empty = {k for k in ("client_id", "tenant") if not _text(merged.get(k))}
    if not empty:
        return set(), {}
    missing = missing_for_app_only(client, has_client_id="client_id" not in empty, has_tenant="tenant" not in empty)
    return empty - set(missing), missing


def _checked_app(merged: dict[str, Any], errors: dict, borrowed: set[str] = frozenset(),
                 hints: dict[str, str] | None = None) -> dict[str, Any]:
    """Each setting of the app on its own, messages under "oauth.<key>". `borrowed`: the empty
    settings an app-only mailbox takes from its MSP's app and its client's consent; `hints`: what
    to say instead when it cannot."""
    hints = hints or {}
    clean = {k: merged.get(k) for k in OAUTH_KEYS if k not in SECRET_KEYS}
    provider, flow = merged.get("provider"), merged.get("flow") or "delegated"
    if provider not in OAUTH_PROVIDERS:
        errors.setdefault("oauth.provider", []).append(
            f"{provider!r} is not a provider this portal knows: {', '.join(OAUTH_PROVIDERS)}." if provider else
            f"Name the provider: {', '.join(OAUTH_PROVIDERS)}.")
    if flow not in OAUTH_FLOWS:
        errors.setdefault("oauth.flow", []).append(f"{flow!r} is not one of {', '.join(OAUTH_FLOWS)}.")
    clean["flow"] = flow
    tenant = _text(merged.get("tenant"))
    if provider == "microsoft" and "tenant" not in borrowed:
        if not tenant:
            errors.setdefault("oauth.tenant", []).append(hints.get("tenant") or (
                "Microsoft needs the customer's tenant: its id, a domain such as contoso.onmicrosoft.com, "
                "or organizations."))
        elif not (tenant == "organizations" or _GUID.match(tenant) or _DOMAIN.match(tenant)):
            errors.setdefault("oauth.tenant", []).append(
                f"{tenant!r} is not a tenant id (a GUID), a domain, or organizations.")
    clean["tenant"] = tenant.lower() if tenant else None
    clean["client_id"] = _text(merged.get("client_id"))
    if "client_id" in borrowed:
        clean["client_id"] = ""  # the MSP's app, looked up when a token is needed
    elif not clean["client_id"]:
        errors.setdefault("oauth.client_id", []).append(hints.get("client_id")
                                                        or "Give the app's client id (application id).")
    for key in ("token_url", "authorize_url"):
        clean[key] = _text(merged.get(key))
        if clean[key] and (problem := url_refusal(clean[key])):
            errors.setdefault(f"oauth.{key}", []).append(problem)
    if provider == "generic":
        if not clean["token_url"]:
            errors.setdefault("oauth.token_url", []).append("A generic provider needs its token URL.")
        if flow == "delegated" and not clean["authorize_url"]:
            errors.setdefault("oauth.authorize_url", []).append(
                "The delegated flow of a generic provider needs its authorisation URL.")
    scopes = merged.get("scopes")
    if scopes is None:
        scopes = []
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s.strip() and " " not in s.strip()
                                               for s in scopes):
        errors.setdefault("oauth.scopes", []).append(
            "Scopes are a list of single words, e.g. [\"https://outlook.office.com/IMAP.AccessAsUser.All\", "
            "\"offline_access\"].")
        scopes = []
    clean["scopes"] = [s.strip() for s in scopes]
    clean["secret_expires"] = checked_date(merged.get("secret_expires"), errors, "oauth.secret_expires")
    return clean


def apply_oauth(mailbox: Mailbox, clean: dict[str, Any] | None, keys: str) -> dict[str, list[Any]]:
    """Store the checked settings on the mailbox. Another app (provider, tenant, client id, token URL)
    drops the grant. Returns what the history must say that a snapshot cannot: a new client secret."""
    if clean is None:
        return {}
    row = mailbox.oauth
    if row is None:
        row = mailbox.oauth = MailboxOAuth(provider=clean["provider"], client_id=clean["client_id"], flow=clean["flow"],
                                           scopes=[], state="not connected", state_changed_at=utcnow())
    other_app = [k.replace("_", " ") for k in APP_IDENTITY if getattr(row, k) != clean[k]]
    for key in OAUTH_KEYS:
        if key not in SECRET_KEYS:
            setattr(row, key, clean[key])
    notes: dict[str, list[Any]] = {}
    secret = clean["client_secret"]
    if secret and not (row.client_secret_encrypted and crypto.decrypt(keys, row.client_secret_encrypted) == secret):
        if row.client_secret_encrypted is not None:
            notes["oauth.client_secret"] = ["(set)", "(changed)"]
        row.client_secret_encrypted = crypto.encrypt(keys, secret)
    pem, cert = clean.get("certificate") or ("", None)
    if cert is not None:
        app_certificate.store(row, keys, pem, cert)
    if other_app and has_grant(row):
        drop_grant(row, f"The app changed ({', '.join(other_app)}): its tokens belong to the old one. Connect again.")
    return notes


def snapshot(row: MailboxOAuth | None) -> dict[str, Any]:
    """The settings and the grant's state as the history shows them: "(set)" for secrets."""
    if row is None:
        return {}
    snap = {f"oauth.{k}": getattr(row, k) for k in OAUTH_KEYS if k not in SECRET_KEYS}
    snap["oauth.secret_expires"] = row.secret_expires.isoformat() if row.secret_expires else None
    snap["oauth.client_secret"] = "(set)" if row.client_secret_encrypted else None
    snap["oauth.certificate"] = row.certificate_thumbprint  # the thumbprint only, never the PEM
    snap["oauth.grant"] = grant_label(row)
    return snap


def has_grant(row: MailboxOAuth) -> bool:
    return row.state != "not connected" or row.refresh_token_encrypted is not None \
        or row.access_token_encrypted is not None


def activation_problems(mailbox: Mailbox) -> list[str]:
    if mailbox.auth != "oauth2":
        return []
    if mailbox.oauth is None:
        return ["Give the OAuth2 settings (provider, client id) before activating."]
    return [] if mailbox.oauth.state == "connected" else [NOT_CONNECTED]


# --- the grant: what portal.oauth stores after talking to the provider -------------------------------


def store_grant(row: MailboxOAuth, keys: str, *, access_token: str, access_expires_at: datetime | None,
                refresh_token: str | None = None, account: str | None = None,
                grant_expires_at: datetime | None = None, actor: User | None = None) -> None:
    """A token from the provider: a new grant or a refresh. A rotated refresh token replaces the
    stored one (a refresh that returns none keeps it). Connecting is in the mailbox's history."""
    row.access_token_encrypted = crypto.encrypt(keys, access_token)
    row.access_token_expires_at = access_expires_at
    if refresh_token:
        row.refresh_token_encrypted = crypto.encrypt(keys, refresh_token)
    if account:
        row.account = account
    if grant_expires_at is not None:
        row.grant_expires_at = grant_expires_at
    before = grant_label(row)
    if set_state(row, "connected", None) or grant_label(row) != before:
        record(row, actor, "connected", before)
    db.session.flush()


def reconnect_needed(row: MailboxOAuth, reason: str, *, actor: User | None = None) -> bool:
    """The provider refused the grant (revoked, expired, wrong secret): the tokens go, the account
    name stays for the page. Returns whether the state changed: then, once per streak, the
    mailbox's alert recipients hear of it with the reason (connecting again ends the streak)."""
    before = grant_label(row)
    row.access_token_encrypted = row.refresh_token_encrypted = None
    row.access_token_expires_at = None
    changed = set_state(row, "reconnect needed", reason)
    if changed:
        # Not at the top: the outbox -> outbound.settings -> servers -> services.mailboxes import this module.
        from portal.services.mailbox_alerts import reconnect_alert  # noqa: PLC0415

        record(row, actor, "reconnect needed", before, reason)
        reconnect_alert(row, reason)
    db.session.flush()
    return changed


def forget_access_token(row: MailboxOAuth) -> None:
    """The service refused the access token before it expired (revoked, the app's consent withdrawn):
    the next connection asks the provider for a new one, which tells whether the grant still works."""
    row.access_token_encrypted = None
    row.access_token_expires_at = None
    db.session.flush()


def drop_grant(row: MailboxOAuth, reason: str | None = None) -> None:
    """Forget the grant entirely (another app, or the admin disconnects): back to not connected."""
    row.access_token_encrypted = row.refresh_token_encrypted = None
    row.access_token_expires_at = row.grant_expires_at = None
    row.account = None
    set_state(row, "not connected", reason)


def client_secret_of(row: MailboxOAuth, keys: str) -> str | None:
    return crypto.decrypt(keys, row.client_secret_encrypted) if row.client_secret_encrypted else None


def refresh_token_of(row: MailboxOAuth, keys: str) -> str | None:
    return crypto.decrypt(keys, row.refresh_token_encrypted) if row.refresh_token_encrypted else None


def access_token_of(row: MailboxOAuth, keys: str) -> str | None:
    return crypto.decrypt(keys, row.access_token_encrypted) if row.access_token_encrypted else None


def rotate_secrets(keys: str) -> int:
    """Re-encrypt the client secrets and tokens with the first key; returns how many."""
    count = 0
    for row in db.session.scalars(select(MailboxOAuth)):
        for column in MailboxOAuth.SECRET_COLUMNS:
            if getattr(row, column) is not None:
                setattr(row, column, crypto.rotate(keys, getattr(row, column)))
                count += 1
    return count


def as_config(row: MailboxOAuth | None, keys: str, with_secrets: bool) -> dict[str, Any] | None:
    """The `oauth` mapping of the configuration file: never a token (a grant is state, not
    configuration), the client secret only `with_secrets`."""
    if row is None:
        return None
    item: dict[str, Any] = {"provider": row.provider, "flow": row.flow}
    if row.tenant:
        item["tenant"] = row.tenant
    if row.client_id:  # none: an app-only Microsoft mailbox signing in as its MSP's app
        item["client_id"] = row.client_id
    if with_secrets and row.client_secret_encrypted:
        item["client_secret"] = client_secret_of(row, keys)
    if with_secrets and row.certificate_encrypted:
        item["certificate"] = app_certificate.pem_of(row, keys)
    for key in ("secret_expires", "token_url", "authorize_url"):
        if getattr(row, key):
            item[key] = getattr(row, key)
    if row.scopes:
        item["scopes"] = list(row.scopes)
    return item

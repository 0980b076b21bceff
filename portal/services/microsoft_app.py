"""An MSP's Microsoft 365 app: one multi-tenant app registration in Entra ID, entered once by the
MSP's admins, that every customer tenant consents to (services.tenant_consent) so that app-only
mailboxes need no app of their own. Flush, never commit.

The client secret is a Fernet token (portal.crypto) like the mailbox passwords: never shown back,
"(set)" or "(changed)" in the history, in the configuration file only with --with-secrets.
Instead of a secret, a certificate (portal.oauth.certificate): the PEM with its private key is kept
encrypted the same way; its thumbprint and notAfter are shown, and notAfter is the expiry the
alerts count down to (services.grant_expiry).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.models import Client, Mailbox, MailboxOAuth, MspMicrosoftApp, User
from portal.models.base import utcnow
from portal.oauth import AppCredentials
from portal.services import ValidationError, app_certificate, audit, checked_date, grant_state

# The keys of `microsoft_app` in the configuration file, and of save_microsoft_app's values.
APP_KEYS = ("client_id", "client_secret", "secret_expires", "certificate")
RECORD = "microsoft app"  # the history's record type; its id is the MSP's
NEW_CREDENTIAL = "the MSP's Microsoft 365 app has a new client secret or certificate"


def msp_microsoft_app(msp_id: int) -> MspMicrosoftApp | None:
    return db.session.scalar(select(MspMicrosoftApp).where(MspMicrosoftApp.msp_id == msp_id))


def msp_microsoft_apps(msp_ids) -> dict[int, MspMicrosoftApp]:
    """The apps of these MSPs by MSP id, in one query (for a list of mailboxes)."""
    ids = set(msp_ids)
    if not ids:
        return {}
    return {a.msp_id: a for a in db.session.scalars(select(MspMicrosoftApp).where(MspMicrosoftApp.msp_id.in_(ids)))}


def borrows_msp_app(oauth_row) -> bool:
    """Whether a mailbox's OAuth2 settings (a MailboxOAuth) sign in as its MSP's app: app-only
    Microsoft with no client id of its own (services.mailbox_tokens.app_credentials)."""
    return oauth_row.provider == "microsoft" and oauth_row.flow == "app" and not oauth_row.client_id


def credentials(row: MspMicrosoftApp, keys: str) -> AppCredentials:
    secret = crypto.decrypt(keys, row.client_secret_encrypted) if row.client_secret_encrypted else ""
    return AppCredentials(row.client_id, secret, app_certificate.pem_of(row, keys))


def _application_id(value: Any, errors: dict) -> str:
    text = str(value or "").strip()
    if not text:
        errors.setdefault("client_id", []).append(
            "Give the app's Application (client) ID, from its Overview page in Entra ID.")
        return ""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        errors.setdefault("client_id", []).append(
            f"{text!r} is not an Application (client) ID: Entra ID shows one like 0e5c1f3a-1b2c-4d5e-8f90-123456789abc.")
        return text


def snapshot(row: MspMicrosoftApp | None) -> dict[str, Any]:
    """What the history shows: never the secret, only whether there is one."""
    if row is None:
        return {}
    return {"client_id": row.client_id, "client_secret": "(set)" if row.client_secret_encrypted else None,
            "secret_expires": row.secret_expires.isoformat() if row.secret_expires else None,
            "certificate": row.certificate_thumbprint,
            "certificate_expires": row.certificate_expires.date().isoformat() if row.certificate_expires else None}


def save_microsoft_app(msp: Client, values: dict[str, Any], *, keys: str, actor: User | None) -> dict[str, list]:
    """Create or change the MSP's app. An empty client secret or certificate keeps the stored one;
    a new app needs one of them (app-only access is client credentials). A certificate must hold
    its RSA private key (2048 bits or more) and be valid now. Returns the history's changes."""
    if not msp.is_msp:
        raise ValueError("the Microsoft 365 app belongs to an MSP, not to one of its clients")
    errors: dict[str, list[str]] = {}
    row = msp_microsoft_app(msp.id)
    client_id = _application_id(values.get("client_id"), errors)
    expires = checked_date(values.get("secret_expires"), errors, "secret_expires")
    secret = str(values.get("client_secret") or "").strip()
    pem, cert = app_certificate.checked(values.get("certificate"), errors, "certificate")
    if not (secret or pem) and (row is None or not (row.client_secret_encrypted or row.certificate_encrypted)) \
            and "certificate" not in errors:
        errors.setdefault("client_secret", []).append(
            "Give the client secret's Value (not its Secret ID), from Certificates & secrets in Entra ID, "
            "or a certificate.")
    if errors:
        raise ValidationError(errors)
    before = snapshot(row)
    if row is None:
        row = MspMicrosoftApp(msp_id=msp.id, client_id=client_id)
        db.session.add(row)
    row.client_id, row.secret_expires = client_id, expires
    secret_changed = bool(secret) and not (row.client_secret_encrypted
                                           and crypto.decrypt(keys, row.client_secret_encrypted) == secret)
    if secret_changed:
        row.client_secret_encrypted = crypto.encrypt(keys, secret)
    if cert is not None:
        app_certificate.store(row, keys, pem, cert)
    changes = audit.diff(before, snapshot(row))
    if secret_changed and before.get("client_secret"):
        changes["client_secret"] = ["(set)", "(changed)"]
    if changes:
        row.updated_at = utcnow()
        audit.record(actor, msp.id, RECORD, msp.id, "created" if not before else "changed", changes)
    if secret_changed or "certificate" in changes:
        grant_state.try_again(_borrowing(msp.id), NEW_CREDENTIAL, actor=actor)
    db.session.flush()
    return changes


def _borrowing(msp_id: int) -> list[MailboxOAuth]:
    """The OAuth2 settings of the MSP's mailboxes that sign in as its app."""
    rows = db.session.scalars(select(MailboxOAuth).join(Mailbox, Mailbox.id == MailboxOAuth.mailbox_id)
                              .where(Mailbox.msp_id == msp_id, MailboxOAuth.provider == "microsoft",
                                     MailboxOAuth.flow == "app"))
    return [row for row in rows if borrows_msp_app(row)]


def remove_microsoft_app(msp: Client, *, actor: User | None) -> bool:
    row = msp_microsoft_app(msp.id)
    if row is None:
        return False
    audit.record(actor, msp.id, RECORD, msp.id, "removed", audit.diff(snapshot(row), {}))
    db.session.delete(row)
    db.session.flush()
    return True


def rotate_secrets(keys: str) -> int:
    """Re-encrypt every MSP's client secret and certificate with the first key; returns how many."""
    count = 0
    for row in db.session.scalars(select(MspMicrosoftApp)):
        for column in MspMicrosoftApp.SECRET_COLUMNS:
            if (value := getattr(row, column)) is not None:
                setattr(row, column, crypto.rotate(keys, value))
                count += 1
    return count


def as_config(msp_id: int, keys: str, with_secrets: bool) -> dict[str, Any] | None:
    """The `microsoft_app` mapping of the configuration file; the secret and the certificate's PEM
    only `with_secrets`."""
    row = msp_microsoft_app(msp_id)
    if row is None:
        return None
    item: dict[str, Any] = {"client_id": row.client_id}
    if with_secrets and row.client_secret_encrypted:
        item["client_secret"] = crypto.decrypt(keys, row.client_secret_encrypted)
    if row.secret_expires:
        item["secret_expires"] = row.secret_expires.isoformat()
    if with_secrets and row.certificate_encrypted:
        item["certificate"] = app_certificate.pem_of(row, keys)
    return item


def apply_config(msp: Client, given: Any, *, keys: str, actor: User | None) -> tuple[bool, bool]:
    """The file's `microsoft_app` for this MSP: (created, changed). A file without the secret
    (exported without --with-secrets) keeps the stored one."""
    if not isinstance(given, dict):
        raise ValidationError({"": ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]})
    unknown = sorted(str(k) for k in given if k not in APP_KEYS)
    if unknown:
        raise ValidationError({"": [f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                                    f"Known: {', '.join(APP_KEYS)}."]})
    created = msp_microsoft_app(msp.id) is None
    changes = save_microsoft_app(msp, dict(given), keys=keys, actor=actor)
    return created, bool(changes)

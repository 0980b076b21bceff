"""The MSP's Microsoft 365 app with a certificate instead of a client secret: checked at save time,
encrypted at rest, exported only with --with-secrets, re-encrypted by `flask secrets rotate`, its
notAfter the expiry the alerts count down to, and app-only tokens obtained with it from the local
authorisation server (tests/oauth_server.py, private_key_jwt)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from portal.models import AuditEntry, MailboxAlert, MspMicrosoftApp, TenantConsent
from portal.oauth import providers
from portal.services import ValidationError, commit, config_io
from portal.services import microsoft_app as app_svc
from portal.services.grant_expiry import secret_expiry
from portal.services.mailbox_alerts import send_expiry_alerts
from portal.services.mailbox_tokens import access_token
from portal.services.mailboxes import rotate_secrets, save_mailbox
from tests.certificates import credential, key_pem, rsa_key

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
NOT_AFTER = datetime(2027, 6, 30, 12, 0, tzinfo=UTC)


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def save(app, msp, **values):
    changes = app_svc.save_microsoft_app(msp, {"client_id": APP_ID, **values}, keys=keys(app), actor=None)
    commit()
    return changes


def errors_of(app, msp, **values):
    with pytest.raises(ValidationError) as err:
        app_svc.save_microsoft_app(msp, {"client_id": APP_ID, **values}, keys=keys(app), actor=None)
    return " ".join(" ".join(v) for v in err.value.errors.values())


@pytest.fixture
def pem():
    return credential(not_after=NOT_AFTER)


def test_a_certificate_is_saved_encrypted_with_its_thumbprint_and_expiry(app, db, msp, pem):
    text, _public, cert = pem
    changes = save(app, msp, certificate=text)
    row = db.session.scalar(select(MspMicrosoftApp))
    assert row.certificate_thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert row.certificate_expires == NOT_AFTER and row.credential_expires == date(2027, 6, 30)
    assert b"PRIVATE KEY" not in row.certificate_encrypted and row.client_secret_encrypted is None
    assert app_svc.credentials(row, keys(app)).certificate.strip() == text.strip()
    assert changes["certificate"] == [None, row.certificate_thumbprint]
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == app_svc.RECORD))
    assert "PRIVATE KEY" not in str(entry.changes) and row.certificate_thumbprint in str(entry.changes)
    # Saved again without it: kept.
    assert save(app, msp) == {}
    assert app_svc.credentials(row, keys(app)).certificate


def test_an_expired_certificate_or_another_key_is_refused_at_save_time(app, db, msp, pem):
    past = datetime(2026, 3, 31, 9, tzinfo=UTC)
    expired = credential(not_after=past, not_before=past - timedelta(days=365))[0]
    assert "the certificate expired on 2026-03-31" in errors_of(app, msp, certificate=expired)
    _text, public, _ = pem
    words = errors_of(app, msp, certificate=key_pem(rsa_key(2048, 1)) + public)
    assert "the private key does not belong to the certificate" in words
    assert "Give the client secret's Value" in errors_of(app, msp)
    assert db.session.scalar(select(MspMicrosoftApp)) is None


def test_exported_only_with_secrets_and_imported_back(app, db, msp, pem):
    text, _, _ = pem
    save(app, msp, certificate=text)
    plain = config_io.export_config(keys=keys(app), msp_id=msp.id)
    assert plain["microsoft_app"] == {"client_id": APP_ID}
    assert "PRIVATE KEY" not in config_io.dump(plain)
    full = config_io.export_config(keys=keys(app), msp_id=msp.id, with_secrets=True)
    assert full["microsoft_app"]["certificate"].strip() == text.strip()
    counts = config_io.import_config(config_io.load(config_io.dump(full), strict=True), keys=keys(app))
    commit()
    assert counts["updated"] == 0  # the same certificate: nothing changed


def test_flask_secrets_rotate_re_encrypts_the_certificate(app, db, msp, pem):
    text, _, _ = pem
    save(app, msp, client_secret="also-a-secret", certificate=text)
    before = db.session.scalar(select(MspMicrosoftApp)).certificate_encrypted
    new_key = Fernet.generate_key().decode()
    app.config["TIDEMARK_ENCRYPTION_KEY"] = f"{new_key},{keys(app)}"
    result = app.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    row = db.session.scalar(select(MspMicrosoftApp))
    assert row.certificate_encrypted != before
    assert app_svc.credentials(row, new_key).certificate.strip() == text.strip()  # the old key not needed
    assert rotate_secrets(new_key) == 2  # the secret and the certificate


APP_ONLY = {"provider": "microsoft", "flow": "app"}


def app_only_mailbox(app, world, msp, **fields):
    from portal.extensions import db  # the fixture of the same name is not passed here
    contoso = world.client(msp, "Contoso")
    db.session.add(TenantConsent(msp_id=msp.id, client_id=contoso.id, tenant=TENANT_ID, app_id=APP_ID))
    commit()
    mailbox, _ = save_mailbox(msp, contoso, {"address": "helpdesk@contoso.com", "host": "outlook.office365.com",
                                             "username": "helpdesk@contoso.com", "auth": "oauth2",
                                             "oauth": dict(APP_ONLY), **fields}, keys=keys(app), actor=None)
    commit()
    return mailbox


def test_the_alerts_count_down_to_the_certificates_not_after(app, db, world, msp, pem):
    text, _, _ = pem
    save(app, msp, client_secret="a-secret", secret_expires="2027-12-31", certificate=text)
    mailbox = app_only_mailbox(app, world, msp, alert_recipients=["noc@acme.example"])
    soon = secret_expiry(mailbox.oauth, datetime(2027, 6, 27, tzinfo=UTC))
    assert (str(soon.on), soon.what, soon.due_threshold()) == ("2027-06-30", "certificate", 3)
    made = send_expiry_alerts(datetime(2027, 6, 27, 8, tzinfo=UTC))
    commit()
    assert [(a.kind, a.details["expires_on"], a.details["expiring"]) for a in made] == [
        ("secret_expiring", "2027-06-30", "certificate")]
    alert = db.session.scalar(select(MailboxAlert))
    assert "The certificate of helpdesk@contoso.com expires on 2027-06-30" in alert.message
    assert "upload it to the app registration" in alert.message


def test_an_app_only_mailbox_gets_its_token_with_the_msp_apps_certificate(app, db, world, msp, pem,
                                                                          oauth_server, monkeypatch):
    text, public, _ = pem
    monkeypatch.setattr(providers, "MICROSOFT_LOGIN", oauth_server.url)
    oauth_server.register_client(APP_ID, "", grant_types=["client_credentials"], certificate=public)
    save(app, msp, certificate=text)
    mailbox = app_only_mailbox(app, world, msp)
    token = access_token(mailbox, keys(app))
    assert oauth_server.token(token).client_id == APP_ID
    sent = oauth_server.token_requests[-1]
    assert "client_assertion" in sent and "client_secret" not in sent

"""The MSP's Microsoft 365 app with a certificate instead of a client secret: checked at save time,
encrypted at rest, exported only with --with-secrets, re-encrypted by `flask secrets rotate`, its
notAfter the expiry the alerts count down to, and app-only tokens obtained with it from the local
authorisation server (tests/oauth_server.py, private_key_jwt)."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select

from portal.models import AuditEntry, MailboxAlert, MspMicrosoftApp, TenantConsent
from portal.oauth import providers
from portal.services import ValidationError, commit, config_io, oauth_states, tenant_consent
from portal.services import microsoft_app as app_svc
from portal.services.grant_expiry import secret_expiry
from portal.services.mailbox_alerts import send_expiry_alerts
from portal.services.mailbox_tokens import access_token
from portal.services.mailboxes import rotate_secrets, save_mailbox
from tests.certificates import credential, key_pem, rsa_key

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# Valid for a while from whenever the tests run (a certificate is refused once expired).
NOT_AFTER = (datetime.now(UTC) + timedelta(days=200)).replace(hour=12, minute=0, second=0, microsecond=0)
ON = NOT_AFTER.date().isoformat()


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
    assert row.certificate_expires == NOT_AFTER and row.credential_expires == NOT_AFTER.date()
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


def test_a_password_protected_key_is_refused_in_plain_words_and_nothing_saved(app, db, msp, pem):
    _text, public, _ = pem
    locked = rsa_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(b"pfx-password")).decode()
    assert "ENCRYPTED PRIVATE KEY" in locked
    words = errors_of(app, msp, certificate=locked + public)
    assert words == ("This certificate cannot sign the app in: the private key is protected by a password: export it "
                     "without one (openssl pkey -in key.pem -out plain.pem).")
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


def test_flask_secrets_rotate_re_encrypts_the_certificate(app, db, msp, pem, rotate_keys):
    text, _, _ = pem
    save(app, msp, client_secret="also-a-secret", certificate=text)
    before = db.session.scalar(select(MspMicrosoftApp)).certificate_encrypted
    new_key, _ = rotate_keys()
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
    later = (NOT_AFTER + timedelta(days=180)).date().isoformat()  # the secret outlives the certificate
    save(app, msp, client_secret="a-secret", secret_expires=later, certificate=text)
    mailbox = app_only_mailbox(app, world, msp, alert_recipients=["noc@acme.example"])
    three_days_before = NOT_AFTER.replace(hour=0) - timedelta(days=3)
    soon = secret_expiry(mailbox.oauth, three_days_before)
    assert (str(soon.on), soon.what, soon.due_threshold()) == (ON, "certificate", 3)
    made = send_expiry_alerts(three_days_before.replace(hour=8))
    commit()
    assert [(a.kind, a.details["expires_on"], a.details["expiring"]) for a in made] == [
        ("secret_expiring", ON, "certificate")]
    alert = db.session.scalar(select(MailboxAlert))
    assert f"The certificate of helpdesk@contoso.com expires on {ON}" in alert.message
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


def test_a_tenant_consent_is_confirmed_with_the_msp_apps_certificate(app, db, world, msp, pem, redis,
                                                                     microsoft_login):
    text, public, _ = pem
    portal = app.config["TIDEMARK_PORTAL_URL"]
    microsoft_login.register_client(APP_ID, "", grant_types=["client_credentials"], certificate=public,
                                    redirect_uris=[oauth_states.redirect_uri(portal)])
    microsoft_login.tenant_id = TENANT_ID
    save(app, msp, certificate=text)
    contoso = world.client(msp, "Contoso")
    link = tenant_consent.create_consent_link(contoso, actor=world.user(msp, email="ana@acme.example"),
                                              portal_url=portal)
    answer = microsoft_login.approve(link.url)
    done = tenant_consent.finish_tenant_consent(oauth_states.take(answer["state"], user_id=None), answer, keys(app))
    assert (done.problem, done.tenant) == (None, TENANT_ID)
    sent = microsoft_login.token_requests[-1]
    assert "client_assertion" in sent and "client_secret" not in sent
    assert db.session.scalar(select(TenantConsent)).tenant == TENANT_ID

"""Settings › Microsoft 365 with a certificate: pasted or uploaded, its thumbprint and expiry shown,
the PEM never; an expired one refused with its date."""

import io
from datetime import UTC, date, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox, MspMicrosoftApp
from tests.certificates import credential
from tests.portal.test_mailbox_forms import form

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"


def test_an_uploaded_certificate_shows_its_thumbprint_and_expiry_never_its_key(msp, admin):
    soon = datetime.now(UTC) + timedelta(days=10)
    text, _public, cert = credential(not_after=soon)
    resp = admin.post("/settings/microsoft-365", {"client_id": APP_ID, "client_secret": "", "certificate": "",
                                                  "certificate_file": (io.BytesIO(text.encode()), "app.pem")},
                      content_type="multipart/form-data")
    assert resp.status_code == 303, resp.get_data(as_text=True)
    page = admin.get("/settings/microsoft-365").get_data(as_text=True)
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    assert f"thumbprint <code>{thumbprint}</code>, valid until {soon.date().isoformat()}" in page
    assert not [line for line in text.splitlines()[1:-1] if line in page and "-----" not in line]  # no PEM line
    assert "The certificate expires in 10 days" in page  # notAfter is the credential's expiry
    assert db.session.scalar(select(MspMicrosoftApp)).credential_expires == soon.date()


def test_an_expired_certificate_is_refused_with_its_date_and_not_echoed(msp, admin):
    past = datetime(2026, 1, 15, 10, tzinfo=UTC)
    text, _, _ = credential(not_after=past, not_before=past - timedelta(days=90))
    resp = admin.post("/settings/microsoft-365", {"client_id": APP_ID, "certificate": text})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "This certificate cannot sign the app in: the certificate expired on 2026-01-15" in body
    assert text.splitlines()[1] not in body  # the key's first line
    assert db.session.scalar(select(MspMicrosoftApp)) is None
    assert date.today() > past.date()


def test_the_mailbox_form_takes_a_certificate_and_never_renders_it_back(app, msp, admin):
    box = {"address": "helpdesk@contoso.com", "username": "helpdesk@contoso.com", "protocol": "imap",
           "host": "outlook.office365.com", "port": "993", "security": "ssl", "password": "", "auth": "oauth2",
           "oauth_provider": "microsoft", "oauth_flow": "app", "oauth_tenant": "contoso.onmicrosoft.com",
           "oauth_client_id": "11111111-2222-3333-4444-555555555555", "oauth_client_secret": "",
           "oauth_secret_expires": "", "oauth_scopes": ""}
    past = datetime(2026, 1, 15, 10, tzinfo=UTC)
    expired, _, _ = credential(not_after=past, not_before=past - timedelta(days=90))
    resp = admin.post("/mailboxes/new", form(msp, **{**box, "oauth_certificate": expired}))
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "the certificate expired on 2026-01-15" in body
    assert expired.splitlines()[1] not in body  # not rendered back after the error
    text, _, cert = credential()
    resp = admin.post("/mailboxes/new", form(msp, **{**box, "oauth_certificate": text}))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    row = db.session.scalar(select(Mailbox)).oauth
    page = admin.get(f"/mailboxes/{row.mailbox_id}/edit").get_data(as_text=True)
    assert text.splitlines()[1] not in page
    assert f"stored: thumbprint {cert.fingerprint(hashes.SHA1()).hex().upper()}" in page

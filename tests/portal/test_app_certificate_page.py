"""Settings › Microsoft 365 with a certificate: pasted or uploaded, its thumbprint and expiry shown,
the PEM never; an expired one refused with its date."""

import io
from datetime import UTC, date, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from sqlalchemy import select

from portal.extensions import db
from portal.models import MspMicrosoftApp
from tests.certificates import credential

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

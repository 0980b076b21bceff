"""A mailbox's own app with a certificate instead of a client secret: checked when saved, tokens
by client credentials with an RFC 7523 client assertion (the local authorisation server checks
it), its notAfter the expiry shown and alerted, exported only with --with-secrets, rotated."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal.models import Mailbox, MailboxOAuth
from portal.services import ValidationError, app_certificate, commit, config_io
from portal.services import mailbox_oauth as oauth_svc
from portal.services.grant_expiry import secret_expiry
from portal.services.mailbox_tokens import access_token, connect_app
from portal.services.mailboxes import save_mailbox
from portal.transport.base import TransportError
from tests.certificates import credential, key_pem, rsa_key

# Valid for a while from whenever the tests run (a certificate is refused once expired).
NOT_AFTER = (datetime.now(UTC) + timedelta(days=200)).replace(hour=12, minute=0, second=0, microsecond=0)


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def values(server_url, **oauth):
    return {"address": "support@acme.example", "host": "127.0.0.1", "username": "support@acme.example",
            "auth": "oauth2", "oauth": {"provider": "generic", "flow": "app", "client_id": "box-app",
                                        "token_url": f"{server_url}/token", "scopes": ["mail"], **oauth}}


def save(app, msp, given, mailbox=None):
    saved, _ = save_mailbox(msp, msp, given, keys=keys(app), actor=None, mailbox=mailbox)
    commit()
    return saved


def test_a_mailbox_gets_its_token_with_its_own_certificate(app, db, msp, oauth_server):
    text, public, cert = credential(not_after=NOT_AFTER)
    oauth_server.register_client("box-app", "", grant_types=["client_credentials"], certificate=public)
    mailbox = save(app, msp, values(oauth_server.url, certificate=text))
    row = mailbox.oauth
    assert row.client_secret_encrypted is None and b"PRIVATE" not in row.certificate_encrypted
    assert row.certificate_expires == NOT_AFTER
    token = connect_app(mailbox, keys(app))
    assert oauth_server.token(token).client_id == "box-app"
    assert "client_assertion" in oauth_server.token_requests[-1]
    assert access_token(mailbox, keys(app)) == token  # stored, fresh
    expiry = secret_expiry(row, NOT_AFTER.replace(hour=0) - timedelta(days=14))
    assert (expiry.on, expiry.what, expiry.due_threshold()) == (NOT_AFTER.date(), "certificate", 14)
    assert oauth_svc.snapshot(row)["oauth.certificate"] == row.certificate_thumbprint


def test_another_keys_signature_turns_into_reconnect_needed_in_plain_words(app, db, msp, oauth_server):
    _text, public, _ = credential()
    oauth_server.register_client("box-app", "", grant_types=["client_credentials"], certificate=public)
    # Another key and its own (valid) certificate: saved, but not the certificate the server knows.
    other = credential(key=rsa_key(2048, 1))[0]
    mailbox = save(app, msp, values(oauth_server.url, certificate=other))
    with pytest.raises(TransportError) as refused:
        connect_app(mailbox, keys(app))
    # A generic server's words, as it answered them (Microsoft's code is named in plain words in
    # tests/oauth/test_certificate.py); the grant is marked until someone mends it.
    assert "refused the app's client id" in refused.value.message and "x5t is not registered" in refused.value.message
    assert mailbox.oauth.state == "reconnect needed"


def test_an_expired_certificate_or_a_foreign_key_is_refused_when_saved(app, db, msp, oauth_server):
    past = datetime(2026, 3, 31, 9, tzinfo=UTC)
    expired = credential(not_after=past, not_before=past - timedelta(days=365))[0]
    with pytest.raises(ValidationError) as err:
        save(app, msp, values(oauth_server.url, certificate=expired))
    assert "the certificate expired on 2026-03-31" in " ".join(err.value.errors["oauth.certificate"])
    _text, public, _ = credential()
    with pytest.raises(ValidationError) as err:
        save(app, msp, values(oauth_server.url, certificate=key_pem(rsa_key(2048, 1)) + public))
    assert "does not belong to the certificate" in " ".join(err.value.errors["oauth.certificate"])
    assert db.session.scalar(select(Mailbox)) is None


def test_exported_only_with_secrets_and_rotated(app, db, msp, oauth_server, rotate_keys):
    text, _, _ = credential()
    save(app, msp, values(oauth_server.url, certificate=text))
    plain = config_io.dump(config_io.export_config(keys=keys(app), msp_id=msp.id))
    assert "certificate" not in plain and text.splitlines()[1] not in plain
    full = config_io.export_config(keys=keys(app), msp_id=msp.id, with_secrets=True)
    assert full["mailboxes"][0]["oauth"]["certificate"].strip() == text.strip()
    before = db.session.scalar(select(MailboxOAuth)).certificate_encrypted
    new_key, output = rotate_keys()
    assert "Re-encrypted 1 secret" in output
    row = db.session.scalar(select(MailboxOAuth))
    assert row.certificate_encrypted != before
    assert app_certificate.pem_of(row, new_key).strip() == text.strip()

"""A mailbox's OAuth2 settings and grant: validation per field, secrets at rest, the history,
the grant dropped when the app changes, activation, and key rotation."""

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from portal import crypto
from portal.models import AuditEntry, Mailbox, MailboxOAuth
from portal.services import ValidationError, commit
from portal.services import mailbox_oauth as oauth_svc
from portal.services.mailboxes import activation_problems, check_connection, rotate_secrets, save_mailbox

SECRET = "client-secret-Zq8~value"
TENANT = "contoso.onmicrosoft.com"


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def save(app, msp, values, mailbox=None):
    return save_mailbox(msp, msp, dict(values), keys=keys(app), actor=None, mailbox=mailbox)


def errors_of(call):
    with pytest.raises(ValidationError) as err:
        call()
    return err.value.errors


def oauth_box(app, msp, **oauth):
    settings = {"provider": "microsoft", "flow": "app", "tenant": TENANT, "client_id": "app-1",
                "client_secret": SECRET, "secret_expires": "2027-06-30", **oauth}
    mailbox, _ = save(app, msp, {"address": "helpdesk@contoso.com", "host": "outlook.office365.com",
                                 "username": "helpdesk@contoso.com", "auth": "oauth2", "oauth": settings})
    commit()
    return mailbox


def connect(app, mailbox, account="helpdesk@contoso.com"):
    oauth_svc.store_grant(mailbox.oauth, keys(app), access_token="access-AAA-token", refresh_token="refresh-RRR-token",
                          access_expires_at=datetime.now(timezone.utc) + timedelta(hours=1), account=account)
    commit()


def stored_bytes(db, table, column):
    with db.engine.connect() as conn:
        return bytes(conn.execute(text(f"SELECT {column} FROM {table}")).scalar())


def audit_text(db):
    return json.dumps([e.changes for e in db.session.scalars(select(AuditEntry))])


def test_settings_and_tokens_are_encrypted_at_rest_and_read_back(app, db, msp):
    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    db.session.expire_all()
    row = db.session.get(Mailbox, mailbox.id).oauth
    assert (row.provider, row.flow, row.tenant, row.client_id) == ("microsoft", "app", TENANT, "app-1")
    assert row.secret_expires == date(2027, 6, 30) and row.state == "connected"
    assert row.account == "helpdesk@contoso.com" and row.state_changed_at is not None
    for column, secret in (("client_secret_encrypted", SECRET), ("refresh_token_encrypted", "refresh-RRR-token"),
                           ("access_token_encrypted", "access-AAA-token")):
        raw = stored_bytes(db, "mailbox_oauth", column)
        assert secret.encode() not in raw and crypto.decrypt(keys(app), raw) == secret
    assert oauth_svc.client_secret_of(row, keys(app)) == SECRET
    assert oauth_svc.refresh_token_of(row, keys(app)) == "refresh-RRR-token"
    assert oauth_svc.access_token_of(row, keys(app)) == "access-AAA-token"
    assert SECRET not in audit_text(db) and "RRR" not in audit_text(db) and "AAA" not in audit_text(db)


def test_a_refresh_without_a_new_refresh_token_keeps_the_old_one(app, db, msp):
    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    oauth_svc.store_grant(mailbox.oauth, keys(app), access_token="access-2", access_expires_at=None)
    assert oauth_svc.refresh_token_of(mailbox.oauth, keys(app)) == "refresh-RRR-token"
    oauth_svc.store_grant(mailbox.oauth, keys(app), access_token="access-3", refresh_token="refresh-rotated",
                          access_expires_at=None)
    assert oauth_svc.refresh_token_of(mailbox.oauth, keys(app)) == "refresh-rotated"


@pytest.mark.parametrize("oauth, field, words", [
    ({"provider": "yahoo"}, "oauth.provider", "not a provider this portal knows"),
    ({"provider": None}, "oauth.provider", "Name the provider"),
    ({"flow": "implicit"}, "oauth.flow", "not one of delegated, app"),
    ({"tenant": None}, "oauth.tenant", "needs the customer's tenant"),
    ({"tenant": "not a tenant"}, "oauth.tenant", "not a tenant id (a GUID), a domain, or organizations"),
    ({"client_id": " "}, "oauth.client_id", "client id"),
    ({"client_secret": None}, "oauth.client_secret", "app flow (client credentials) needs the app's client secret"),
    ({"secret_expires": "30/06/2027"}, "oauth.secret_expires", "not a date like 2027-06-30"),
    ({"scopes": "IMAP.AccessAsUser.All offline_access"}, "oauth.scopes", "list of single words"),
    ({"scopes": ["ok", 3]}, "oauth.scopes", "list of single words"),
    ({"token_url": "http://login.example.net/token"}, "oauth.token_url", "must use https"),
    ({"authorize_url": "ftp://x"}, "oauth.authorize_url", "not a URL"),
    ({"provider": "generic", "tenant": None}, "oauth.token_url", "generic provider needs its token URL"),
    ({"provider": "generic", "tenant": None, "flow": "delegated", "token_url": "https://id.example/token"},
     "oauth.authorize_url", "needs its authorisation URL"),
    ({"provider": "google"}, "oauth.tenant", "Only Microsoft has a tenant"),
    ({"colour": "blue"}, "oauth", "Unknown OAuth2 settings: colour"),
])
def test_each_wrong_setting_is_named_under_oauth(app, msp, oauth, field, words):
    settings = {"provider": "microsoft", "flow": "app", "tenant": TENANT, "client_id": "app-1",
                "client_secret": SECRET, **oauth}
    errors = errors_of(lambda: save(app, msp, {"address": "h@contoso.com", "auth": "oauth2", "oauth": settings}))
    assert field in errors and words in " ".join(errors[field]), errors


@pytest.mark.parametrize("tenant", ["organizations", "72f988bf-86f1-41af-91ab-2d7cd011db47", "Contoso.com"])
def test_a_tenant_is_a_guid_a_domain_or_organizations(app, msp, tenant):
    mailbox = oauth_box(app, msp, tenant=tenant)
    assert mailbox.oauth.tenant == tenant.lower()


def test_generic_accepts_http_on_loopback_only_and_keeps_scopes(app, msp):
    mailbox = oauth_box(app, msp, provider="generic", tenant=None, flow="delegated", client_secret=None,
                        token_url="http://127.0.0.1:8555/token", authorize_url="http://localhost:8555/authorize",
                        scopes=["imap", "offline_access"])
    assert mailbox.oauth.token_url == "http://127.0.0.1:8555/token" and mailbox.oauth.scopes == ["imap",
                                                                                                  "offline_access"]
    assert mailbox.oauth.client_secret_encrypted is None  # a delegated app may be a public client (PKCE)


def test_auth_oauth2_needs_settings_and_auth_must_be_known(app, msp):
    errors = errors_of(lambda: save(app, msp, {"address": "h@contoso.com", "auth": "oauth2"}))
    assert "needs the OAuth2 settings" in errors["oauth"][0]
    errors = errors_of(lambda: save(app, msp, {"address": "h@contoso.com", "auth": "kerberos"}))
    assert "not one of password, oauth2" in errors["auth"][0]


def test_a_graph_mailbox_has_an_api_url_no_host_and_needs_microsoft_oauth2(app, msp):
    errors = errors_of(lambda: save(app, msp, {"address": "g@contoso.com", "protocol": "graph", "host": "x.example"}))
    assert "OAuth2 only" in errors["auth"][0] and "no server host" in errors["host"][0]
    google = {"provider": "google", "client_id": "g", "flow": "delegated"}
    errors = errors_of(lambda: save(app, msp, {"address": "g@contoso.com", "protocol": "graph", "auth": "oauth2",
                                               "oauth": google}))
    assert "provider microsoft only" in errors["oauth.provider"][0]
    mailbox = oauth_box(app, msp)
    save(app, msp, {"protocol": "graph", "host": ""}, mailbox=mailbox)
    assert (mailbox.api_url, mailbox.host, mailbox.port) == ("https://graph.microsoft.com/v1.0", "", 443)
    save(app, msp, {"api_url": "http://127.0.0.1:9000/v1.0/"}, mailbox=mailbox)
    assert mailbox.api_url == "http://127.0.0.1:9000/v1.0"
    assert "only a Graph mailbox" in " ".join(errors_of(lambda: save(
        app, msp, {"address": "i@contoso.com", "api_url": "https://graph.microsoft.com/v1.0"}))["api_url"]).replace(
        "Only", "only")
    assert "must use https" in errors_of(lambda: save(app, msp, {"api_url": "http://graph.example/v1.0"},
                                                      mailbox=mailbox))["api_url"][0]
    assert activation_problems(mailbox) == [oauth_svc.NOT_CONNECTED]


def test_an_oauth2_mailbox_is_activated_only_once_connected(app, db, msp):
    mailbox = oauth_box(app, msp)
    errors = errors_of(lambda: save(app, msp, {"status": "active"}, mailbox=mailbox))
    assert errors["status"] == [oauth_svc.NOT_CONNECTED]  # and no password is asked for
    db.session.rollback()
    mailbox = db.session.get(Mailbox, mailbox.id)
    connect(app, mailbox)
    save(app, msp, {"status": "active"}, mailbox=mailbox)
    assert mailbox.status == "active"
    # A grant that lapses later is the refresher's alarm: the active mailbox's settings stay editable.
    assert oauth_svc.reconnect_needed(mailbox.oauth, "invalid_grant: the refresh token expired")
    assert not oauth_svc.reconnect_needed(mailbox.oauth, "invalid_grant again")  # one change per streak
    save(app, msp, {"name": "Helpdesk"}, mailbox=mailbox)
    assert mailbox.oauth.refresh_token_encrypted is None and mailbox.oauth.account == "helpdesk@contoso.com"
    assert not check_connection(mailbox, keys(app)).ok


def test_changing_the_client_id_drops_the_grant_and_the_history_says_so_without_secrets(app, db, msp):
    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    _box, changes = save(app, msp, {"oauth": {"client_id": "app-2"}}, mailbox=mailbox)
    commit()
    row = mailbox.oauth
    assert changes["oauth.client_id"] == ["app-1", "app-2"]
    assert changes["oauth.grant"] == ["connected as helpdesk@contoso.com", "not connected"]
    assert row.state == "not connected" and "client id" in row.state_reason
    assert row.refresh_token_encrypted is None and row.access_token_encrypted is None and row.account is None
    assert row.client_secret_encrypted is not None  # the app's secret is configuration: it stays
    # Settings that are not the app's identity keep the grant.
    connect(app, mailbox)
    save(app, msp, {"oauth": {"secret_expires": "2028-01-31", "scopes": ["https://outlook.office.com/.default"]}},
         mailbox=mailbox)
    assert row.state == "connected" and row.refresh_token_encrypted is not None
    for change in ({"tenant": "fabrikam.com"}, {"provider": "generic", "tenant": None,
                                                 "token_url": "https://id.example/token"}):
        connect(app, mailbox)
        save(app, msp, {"oauth": change}, mailbox=mailbox)
        assert row.state == "not connected", change


def test_a_new_client_secret_is_audited_as_changed_never_with_its_value(app, db, msp):
    mailbox = oauth_box(app, msp)
    first = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "mailbox",
                                                       AuditEntry.action == "created"))
    assert first.changes["oauth.client_secret"] == [None, "(set)"]
    _box, same = save(app, msp, {"oauth": {"client_secret": SECRET}}, mailbox=mailbox)
    assert same == {}  # typed again: nothing changed
    _box, changes = save(app, msp, {"oauth": {"client_secret": "another-secret-XYZ"}}, mailbox=mailbox)
    commit()
    assert changes == {"oauth.client_secret": ["(set)", "(changed)"]}
    assert oauth_svc.client_secret_of(mailbox.oauth, keys(app)) == "another-secret-XYZ"
    assert "XYZ" not in audit_text(db) and SECRET not in audit_text(db)


def test_auth_password_clears_nothing(app, msp):
    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    _box, changes = save(app, msp, {"auth": "password", "password": "pw-1"}, mailbox=mailbox)
    assert changes == {"auth": ["oauth2", "password"], "password": [None, "(set)"]}
    assert mailbox.oauth.state == "connected" and mailbox.oauth.client_id == "app-1"
    save(app, msp, {"auth": "oauth2"}, mailbox=mailbox)
    assert mailbox.password_encrypted is not None and mailbox.oauth.refresh_token_encrypted is not None


def test_rotation_re_encrypts_client_secrets_and_tokens(app, db, msp):
    old = keys(app)
    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    new = Fernet.generate_key().decode()
    assert rotate_secrets(f"{new},{old}") == 3  # client secret, refresh token, access token
    commit()
    db.session.expire_all()
    row = db.session.scalar(select(MailboxOAuth))
    assert oauth_svc.client_secret_of(row, new) == SECRET
    assert oauth_svc.refresh_token_of(row, new) == "refresh-RRR-token"
    assert oauth_svc.access_token_of(row, new) == "access-AAA-token"
    with pytest.raises(crypto.SecretError):
        oauth_svc.access_token_of(row, old)


def test_deleting_the_mailbox_deletes_its_grant(app, db, msp):
    from portal.services.mailboxes import delete_mailbox

    mailbox = oauth_box(app, msp)
    connect(app, mailbox)
    delete_mailbox(mailbox, actor=None)
    commit()
    assert db.session.scalar(select(MailboxOAuth)) is None


def test_a_password_left_from_before_goes_when_an_oauth2_mailbox_moves_to_another_server(app, msp):
    mailbox, _ = save(app, msp, {"address": "h@contoso.com", "host": "imap.contoso.com", "username": "h",
                                 "password": "old-pw"})
    with pytest.raises(ValidationError):  # a password mailbox: typed again, as before
        save(app, msp, {"host": "imap2.contoso.com"}, mailbox=mailbox)
    _box, changes = save(app, msp, {"host": "outlook.office365.com", "auth": "oauth2", "oauth": {
        "provider": "microsoft", "tenant": "organizations", "client_id": "app-1"}}, mailbox=mailbox)
    assert mailbox.password_encrypted is None and changes["password"] == ["(set)", None]
    assert mailbox.oauth.flow == "delegated" and mailbox.oauth.state_changed_at is not None

"""An MSP's Microsoft 365 app (its secret at rest, its history, key rotation), the consent link of
a client, the consent's callback, and what app-only mailboxes take from both."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text

from portal.models import AuditEntry, MspMicrosoftApp, TenantConsent
from portal.oauth import OAuthError
from portal.services import ValidationError, commit, oauth_states
from portal.services import microsoft_app as app_svc
from portal.services import tenant_consent as consent_svc
from portal.services.mailboxes import rotate_secrets, save_mailbox
from tests.oauth_server import MICROSOFT_EXPIRED_SECRET

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
SECRET = "Zq8~msp-app-secret-value"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PORTAL = "https://tickets.acme.example"


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def with_app(app, msp, **values):
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": SECRET, "secret_expires": "2027-06-30",
                                     **values}, keys=keys(app), actor=None)
    commit()


def errors_of(call):
    with pytest.raises(ValidationError) as err:
        call()
    return err.value.errors


def history(db, record_type=None):
    query = select(AuditEntry).order_by(AuditEntry.id)
    if record_type:
        query = query.where(AuditEntry.record_type == record_type)
    return db.session.scalars(query).all()


def test_the_app_is_saved_with_its_secret_encrypted_and_audited_without_values(app, db, msp):
    with_app(app, msp)
    row = app_svc.msp_microsoft_app(msp.id)
    with db.engine.connect() as conn:
        stored = bytes(conn.execute(text("SELECT client_secret_encrypted FROM msp_microsoft_apps")).scalar())
    assert SECRET.encode() not in stored
    assert app_svc.credentials(row, keys(app)).client_secret == SECRET
    assert str(row.secret_expires) == "2027-06-30"
    # An empty secret keeps the stored one; a new one is "(changed)", never its value.
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID.upper(), "client_secret": ""}, keys=keys(app), actor=None)
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": "new-secret-2"}, keys=keys(app), actor=None)
    commit()
    assert app_svc.credentials(app_svc.msp_microsoft_app(msp.id), keys(app)).client_secret == "new-secret-2"
    entries = history(db, app_svc.RECORD)
    assert [e.action for e in entries] == ["created", "changed", "changed"]
    assert entries[0].changes["client_secret"] == [None, "(set)"]
    assert entries[1].changes == {"secret_expires": ["2027-06-30", None]}  # the GUID is kept as typed, lower case
    assert entries[2].changes == {"client_secret": ["(set)", "(changed)"]}
    everything = json.dumps([e.changes for e in history(db)])
    assert SECRET not in everything and "new-secret-2" not in everything


@pytest.mark.parametrize("values, field, words", [
    ({"client_id": ""}, "client_id", "Application (client) ID"),
    ({"client_id": "my-app"}, "client_id", "is not an Application (client) ID"),
    ({"client_secret": ""}, "client_secret", "Value (not its Secret ID)"),
    ({"secret_expires": "30/06/2027"}, "secret_expires", "not a date like 2027-06-30"),
])
def test_each_wrong_setting_is_named(app, db, msp, values, field, words):
    errors = errors_of(lambda: app_svc.save_microsoft_app(
        msp, {"client_id": APP_ID, "client_secret": SECRET, **values}, keys=keys(app), actor=None))
    assert words in " ".join(errors[field]), errors
    assert db.session.scalar(select(MspMicrosoftApp)) is None


def test_flask_secrets_rotate_re_encrypts_the_msp_app_secret(app, db, msp, rotate_keys):
    with_app(app, msp)
    before = db.session.scalar(select(MspMicrosoftApp)).client_secret_encrypted
    new_key, _ = rotate_keys()
    row = db.session.scalar(select(MspMicrosoftApp))
    assert row.client_secret_encrypted != before
    assert app_svc.credentials(row, new_key).client_secret == SECRET  # the old key not needed
    assert rotate_secrets(new_key) == 1


def test_a_consent_link_names_the_msp_app_and_the_one_callback(app, db, world, msp, redis):
    contoso = world.client(msp, "Contoso")
    ana = world.user(msp, email="ana@acme.example")
    assert consent_svc.NO_APP in " ".join(errors_of(lambda: consent_svc.create_consent_link(
        contoso, actor=ana, portal_url=PORTAL))[""])
    with_app(app, msp)
    link = consent_svc.create_consent_link(contoso, actor=ana, portal_url=PORTAL + "/")
    commit()
    parts = urlsplit(link.url)
    query = parse_qs(parts.query)
    assert (parts.netloc, parts.path) == ("login.microsoftonline.com", "/organizations/v2.0/adminconsent")
    assert query["client_id"] == [APP_ID] and query["redirect_uri"] == [PORTAL + "/oauth/callback"]
    started = oauth_states.take(query["state"][0], user_id=None)
    assert (started.purpose, started.msp_id, started.subject_id, started.user_id) == (
        "tenant consent", msp.id, contoso.id, ana.id)
    entry = history(db, "client")[-1]
    assert entry.action == "Microsoft 365 consent link created" and query["state"][0] not in json.dumps(entry.changes)


def started_consent(app, world, msp, client):
    ana = world.user(msp, email="ana@acme.example")
    with_app(app, msp)
    link = consent_svc.create_consent_link(client, actor=ana, portal_url=PORTAL)
    commit()
    state = parse_qs(urlsplit(link.url).query)["state"][0]
    return state, oauth_states.take(state, user_id=None)


def consented_at_microsoft(app, world, msp, client, login):
    """The customer's admin opens the link and accepts at Microsoft (the test server): the started
    consent and the query Microsoft sends the browser back with."""
    login.register_client(APP_ID, SECRET, redirect_uris=[PORTAL + "/oauth/callback"],
                          grant_types=["client_credentials"])
    login.tenant_id = TENANT_ID
    ana = world.user(msp, email="ana@acme.example")
    with_app(app, msp)
    link = consent_svc.create_consent_link(client, actor=ana, portal_url=PORTAL)
    commit()
    answer = login.approve(link.url)
    return oauth_states.take(answer["state"], user_id=None), answer


def test_a_granted_consent_stores_the_tenant_on_the_client_with_who_in_its_history(app, db, world, msp, redis,
                                                                                    microsoft_login):
    contoso = world.client(msp, "Contoso")
    started, answer = consented_at_microsoft(app, world, msp, contoso, microsoft_login)
    assert answer == {"admin_consent": "True", "tenant": TENANT_ID, "scope": "https://graph.microsoft.com/.default",
                      "state": answer["state"]}
    done = consent_svc.finish_tenant_consent(started, answer, keys(app))
    commit()
    assert (done.tenant, done.client_name, done.msp_name, done.problem) == (TENANT_ID, "Contoso", "Acme MSP", None)
    row = db.session.scalar(select(TenantConsent))
    assert (row.client_id, row.tenant, row.app_id) == (contoso.id, TENANT_ID, APP_ID)
    entry = history(db, "client")[-1]
    assert entry.action == "Microsoft 365 tenant consented" and entry.changes["tenant"] == [None, TENANT_ID]
    assert entry.actor_label == "customer's admin (link from ana@acme.example)"
    assert consent_svc.consented_tenant(contoso) == TENANT_ID
    # Confirmed by Microsoft: an app-only token asked for in that tenant with the MSP's app.
    sent = microsoft_login.token_requests[-1]
    assert (sent["grant_type"], sent["client_id"], sent["scope"]) == (
        "client_credentials", APP_ID, "https://graph.microsoft.com/.default")


OTHER_TENANT = "0badc0de-0000-4000-8000-000000000000"


def test_a_tenant_named_by_the_browser_but_not_consented_is_refused_and_nothing_stored(app, db, world, msp, redis,
                                                                                      microsoft_login):
    contoso = world.client(msp, "Contoso")
    started, answer = consented_at_microsoft(app, world, msp, contoso, microsoft_login)
    # Whoever holds the link edits the query: another tenant, which never consented.
    done = consent_svc.finish_tenant_consent(started, {**answer, "tenant": OTHER_TENANT}, keys(app))
    assert done.problem == (f"Microsoft did not confirm it for the tenant {OTHER_TENANT}: wrong tenant: the app is "
                            f"not registered or consented in the tenant {OTHER_TENANT!r} (AADSTS700016)")
    assert done.tenant is None and done.msp_name == "Acme MSP"
    assert db.session.scalar(select(TenantConsent)) is None
    assert history(db, "client")[-1].action == "Microsoft 365 consent link created"


def test_a_consent_microsoft_refuses_for_the_apps_secret_says_why_and_stores_nothing(app, db, world, msp, redis,
                                                                                    microsoft_login):
    contoso = world.client(msp, "Contoso")
    started, answer = consented_at_microsoft(app, world, msp, contoso, microsoft_login)
    microsoft_login.fail_next(MICROSOFT_EXPIRED_SECRET, status=401)
    done = consent_svc.finish_tenant_consent(started, answer, keys(app))
    assert "the client secret has expired: create a new one in Entra ID" in done.problem, done.problem
    assert "AADSTS7000222" in done.problem
    assert db.session.scalar(select(TenantConsent)) is None


def test_a_consent_for_an_app_the_msp_has_since_replaced_is_refused(app, db, world, msp, redis, microsoft_login):
    contoso = world.client(msp, "Contoso")
    started, answer = consented_at_microsoft(app, world, msp, contoso, microsoft_login)
    app_svc.save_microsoft_app(msp, {"client_id": "aaaaaaaa-9d8e-4a6b-b1c2-0a9f8e7d6c5b"}, keys=keys(app), actor=None)
    done = consent_svc.finish_tenant_consent(started, answer, keys(app))
    assert "Microsoft 365 app changed after this link was made" in done.problem
    assert db.session.scalar(select(TenantConsent)) is None


def test_a_declined_consent_says_so_with_microsofts_code_and_stores_nothing(app, db, world, msp, redis):
    contoso = world.client(msp, "Contoso")
    state, started = started_consent(app, world, msp, contoso)
    done = consent_svc.finish_tenant_consent(started, {
        "error": "access_denied", "state": state,
        "error_description": "AADSTS65004: User declined to consent to access the app."}, keys(app))
    assert "declined the consent" in done.problem and "AADSTS65004" in done.problem
    assert (done.msp_name, done.tenant) == ("Acme MSP", None)  # whom the customer's admin asks for a new link
    assert db.session.scalar(select(TenantConsent)) is None


def test_a_consent_for_a_client_deleted_meanwhile_or_with_another_state_is_refused(app, db, world, msp, redis):
    contoso = world.client(msp, "Contoso")
    state, started = started_consent(app, world, msp, contoso)
    forged = consent_svc.finish_tenant_consent(started, {"admin_consent": "True", "tenant": TENANT_ID,
                                                         "state": "forged"}, keys(app))
    assert "state that does not match" in forged.problem
    gone = oauth_states.StartedSignIn("tenant consent", msp.id, started.user_id, 999_999, started.authorisation,
                                      started.app_id)
    done = consent_svc.finish_tenant_consent(gone, {"admin_consent": "True", "tenant": TENANT_ID, "state": state},
                                             keys(app))
    assert "no longer exists" in done.problem and done.msp_name == "Acme MSP"
    assert db.session.scalar(select(TenantConsent)) is None


def consent(db, client, tenant=TENANT_ID, app_id=APP_ID):
    db.session.add(TenantConsent(msp_id=client.msp_id, client_id=client.id, tenant=tenant, app_id=app_id))
    commit()


def test_a_department_uses_its_customers_tenant_and_a_customer_never_the_msps(app, db, world, msp):
    contoso = world.client(msp, "Contoso")
    berlin = world.client(contoso, "Contoso Berlin")
    fabrikam = world.client(msp, "Fabrikam")
    with_app(app, msp)
    consent(db, msp, tenant="11111111-1111-1111-1111-111111111111")
    consent(db, contoso)
    assert consent_svc.consented_tenant(berlin) == TENANT_ID
    assert consent_svc.consented_tenant(fabrikam) is None
    assert consent_svc.consented_tenant(msp) == "11111111-1111-1111-1111-111111111111"
    # The MSP registered another app: the customer's admin must consent to it again.
    app_svc.save_microsoft_app(msp, {"client_id": "aaaaaaaa-1b2c-4d5e-8f90-123456789abc"}, keys=keys(app), actor=None)
    assert consent_svc.consented_tenant(contoso) is None


def test_the_fallback_gives_the_msp_app_with_its_secret_and_the_consented_tenant(app, db, world, msp):
    contoso = world.client(msp, "Contoso")
    assert consent_svc.app_fallback(contoso) == consent_svc.AppFallback(tenant=None, app=None)
    with_app(app, msp)
    consent(db, contoso)
    fallback = consent_svc.app_fallback(contoso, keys(app))
    assert fallback.tenant == TENANT_ID
    assert (fallback.app.client_id, fallback.app.client_secret) == (APP_ID, SECRET)


APP_ONLY = {"provider": "microsoft", "flow": "app"}


def save_box(app, msp, client, oauth):
    return save_mailbox(msp, client, {"address": "helpdesk@contoso.com", "host": "outlook.office365.com",
                                      "username": "helpdesk@contoso.com", "auth": "oauth2", "oauth": dict(oauth)},
                        keys=keys(app), actor=None)


def test_an_app_only_mailbox_without_app_or_tenant_says_what_is_missing(app, db, world, msp):
    contoso = world.client(msp, "Contoso")
    errors = errors_of(lambda: save_box(app, msp, contoso, APP_ONLY))
    assert "Settings › Microsoft 365" in " ".join(errors["oauth.client_id"])
    assert "consent link" in " ".join(errors["oauth.tenant"])
    with_app(app, msp)
    errors = errors_of(lambda: save_box(app, msp, contoso, APP_ONLY))
    assert list(errors) == ["oauth.tenant"]  # the MSP's app brings its client id and secret


def test_an_app_only_mailbox_uses_the_msp_app_and_the_clients_consent(app, db, world, msp):
    contoso = world.client(msp, "Contoso")
    with_app(app, msp)
    consent(db, contoso)
    mailbox, _ = save_box(app, msp, contoso, APP_ONLY)
    commit()
    assert (mailbox.oauth.client_id, mailbox.oauth.tenant, mailbox.oauth.client_secret_encrypted) == ("", None, None)
    assert consent_svc.app_only_mailboxes(contoso) == [mailbox]
    # Its own app needs its own secret, and its own tenant is kept.
    errors = errors_of(lambda: save_box(app, msp, contoso, {**APP_ONLY, "client_id": "own-app"}))
    assert "client secret" in " ".join(errors["oauth.client_secret"])
    # A delegated mailbox borrows nothing.
    errors = errors_of(lambda: save_box(app, msp, contoso, {"provider": "microsoft", "flow": "delegated"}))
    assert {"oauth.client_id", "oauth.tenant"} <= set(errors)


def test_app_credentials_take_the_msp_app_and_the_consented_tenant(app, db, world, msp):
    from portal.services.mailbox_tokens import access_token, app_credentials
    from portal.transport.base import TransportError

    contoso = world.client(msp, "Contoso")
    with_app(app, msp)
    consent(db, contoso)
    mailbox, _ = save_box(app, msp, contoso, APP_ONLY)
    commit()
    provider, creds = app_credentials(mailbox, keys(app))
    assert (provider.name, provider.tenant) == ("microsoft", TENANT_ID)
    assert provider.token_url == f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/token"
    assert (creds.client_id, creds.client_secret) == (APP_ID, SECRET)
    # Its own tenant wins over the consent; its own app over the MSP's.
    mailbox.oauth.tenant = "contoso.onmicrosoft.com"
    assert app_credentials(mailbox, keys(app))[0].tenant == "contoso.onmicrosoft.com"
    mailbox.oauth.client_id = "own-app"
    assert app_credentials(mailbox, keys(app))[1].client_id == "own-app"
    # A consent withdrawn (another app registered): the token request is refused in plain words,
    # before anything is sent to Microsoft.
    mailbox.oauth.tenant, mailbox.oauth.client_id = None, ""
    app_svc.save_microsoft_app(msp, {"client_id": "aaaaaaaa-9d8e-4a6b-b1c2-0a9f8e7d6c5b"}, keys=keys(app), actor=None)
    with pytest.raises(OAuthError, match="is not connected to a Microsoft 365 tenant: send the customer's admin"):
        app_credentials(mailbox, keys(app))
    with pytest.raises(TransportError, match="consent link"):
        access_token(mailbox, keys(app))
    app_svc.remove_microsoft_app(msp, actor=None)
    with pytest.raises(OAuthError, match="its MSP has no Microsoft 365 app"):
        app_credentials(mailbox, keys(app))


def test_a_mailbox_signing_in_as_the_msp_app_is_warned_of_that_apps_secret(app, db, world, msp):
    from datetime import datetime, timezone

    from portal.services.grant_expiry import secret_expiry

    contoso = world.client(msp, "Contoso")
    with_app(app, msp, secret_expires="2027-06-30")
    consent(db, contoso)
    mailbox, _ = save_box(app, msp, contoso, APP_ONLY)
    commit()
    soon = secret_expiry(mailbox.oauth, datetime(2027, 6, 27, tzinfo=timezone.utc))
    assert (str(soon.on), soon.days_left, soon.due_threshold()) == ("2027-06-30", 3, 3)
    mailbox.oauth.client_id = "own-app"  # its own app: its own date (none given)
    assert secret_expiry(mailbox.oauth, datetime(2027, 6, 27, tzinfo=timezone.utc)) is None

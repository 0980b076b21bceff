"""The pages of Microsoft 365 tenant consent: the MSP's app on Settings › Microsoft 365, the consent
link on a client's page, and the page the customer's admin lands on."""

import re
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, MspMicrosoftApp, TenantConsent
from portal.services import oauth_states
from portal.services import microsoft_app as app_svc

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"
SECRET = "Zq8~msp-app-secret-value"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
FORM = {"client_id": APP_ID, "client_secret": SECRET, "secret_expires": "2027-06-30"}


@pytest.fixture
def two_msps(world, msp, admin, make_browser):
    """Acme (admin ana signed in, client Contoso, technician tom) and Beta (admin eve signed in)."""
    contoso = world.client(msp, "Contoso")
    world.user(msp, email="tom@acme.example", role="technician")
    beta = world.msp("Beta MSP")
    world.user(beta, email="eve@beta.example")
    eve = make_browser()
    eve.sign_in("eve@beta.example")
    return msp, contoso, beta, eve


def test_an_msp_admin_enters_the_app_and_the_secret_never_comes_back(app, two_msps, admin):
    msp, _contoso, _beta, _eve = two_msps
    page = admin.get("/settings/microsoft-365").get_data(as_text=True)
    assert 'href="/settings/microsoft-365"' in page and "/oauth/callback" in page
    resp = admin.post("/settings/microsoft-365", FORM)
    assert resp.status_code == 303
    row = db.session.scalar(select(MspMicrosoftApp))
    assert row.msp_id == msp.id and row.client_id == APP_ID
    page = admin.get("/settings/microsoft-365").get_data(as_text=True)
    assert SECRET not in page and APP_ID in page and "(set) leave empty to keep it" in page
    assert "client_secret: — → (set)" in page  # the history, without the value
    # Saving without the secret keeps it.
    assert admin.post("/settings/microsoft-365", {**FORM, "client_secret": ""}).status_code == 303
    db.session.expire_all()
    assert app_svc.credentials(db.session.scalar(select(MspMicrosoftApp)), app.config["TIDEMARK_ENCRYPTION_KEY"]
                               ).client_secret == SECRET


def test_wrong_values_answer_422_and_nothing_is_saved(two_msps, admin):
    resp = admin.post("/settings/microsoft-365", {**FORM, "client_id": "my app", "secret_expires": "soon"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "is not an Application (client) ID" in body and "not a date" in body
    assert SECRET not in body
    assert db.session.scalar(select(MspMicrosoftApp)) is None


def test_without_the_csrf_token_nothing_is_saved(two_msps, admin):
    resp = admin.post("/settings/microsoft-365", FORM, token=False)
    assert resp.status_code == 302
    assert db.session.scalar(select(MspMicrosoftApp)) is None


def test_each_msp_has_its_own_app_and_technicians_cannot_see_it(two_msps, admin, make_browser):
    msp, _contoso, beta, eve = two_msps
    admin.post("/settings/microsoft-365", FORM)
    page = eve.get("/settings/microsoft-365").get_data(as_text=True)
    assert APP_ID not in page and "Not entered yet" in page
    other = "aaaaaaaa-1b2c-4d5e-8f90-123456789abc"
    assert eve.post("/settings/microsoft-365", {**FORM, "client_id": other}).status_code == 303
    db.session.expire_all()
    assert {r.msp_id: r.client_id for r in db.session.scalars(select(MspMicrosoftApp))} == {msp.id: APP_ID,
                                                                                          beta.id: other}
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.get("/settings/microsoft-365").status_code == 403
    assert tom.post("/settings/microsoft-365", {**FORM, "client_id": other}).status_code == 403


def link_in(page: str) -> str:
    found = re.search(r'<textarea id="consent-link-url"[^>]*>([^<]+)</textarea>', page)
    return found.group(1).replace("&amp;", "&")


def test_the_client_page_creates_a_consent_link_for_the_customers_admin(app, two_msps, admin, redis):
    msp, contoso, _beta, _eve = two_msps
    page = admin.get(f"/clients/{contoso.id}").get_data(as_text=True)
    assert "Microsoft 365 consent" in page and "/settings/microsoft-365" in page
    refused = admin.post(f"/clients/{contoso.id}/consent-link")
    assert refused.status_code == 422 and "Enter your MSP&#39;s Microsoft 365 app first" in refused.get_data(as_text=True)
    admin.post("/settings/microsoft-365", FORM)
    page = admin.get(f"/clients/{contoso.id}").get_data(as_text=True)
    assert "Not connected to a tenant yet" in page and "Create consent link" in page
    script = page.replace("&#34;", '"').replace("&quot;", '"')
    assert f'$AppId = "{APP_ID}"' in script
    # The last step checks the scope: InScope for each role.
    assert 'Test-ServicePrincipalAuthorization -Identity $ObjectId -Resource "helpdesk@customer.example"' in script
    resp = admin.post(f"/clients/{contoso.id}/consent-link")
    assert resp.status_code == 200
    url = link_in(resp.get_data(as_text=True))
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [APP_ID]
    assert unquote(query["redirect_uri"][0]) == app.config["TIDEMARK_PORTAL_URL"].rstrip("/") + "/oauth/callback"
    started = oauth_states.take(query["state"][0], user_id=None)
    assert (started.purpose, started.subject_id) == ("tenant consent", contoso.id)
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "client")
                               .order_by(AuditEntry.id.desc())).first()
    assert entry.action == "Microsoft 365 consent link created"


def test_another_msp_a_technician_and_a_forged_form_cannot_create_one(two_msps, admin, make_browser, redis):
    msp, contoso, _beta, eve = two_msps
    admin.post("/settings/microsoft-365", FORM)
    assert eve.post(f"/clients/{contoso.id}/consent-link").status_code == 404
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.post(f"/clients/{contoso.id}/consent-link").status_code == 403
    assert "Create consent link" not in tom.get(f"/clients/{contoso.id}").get_data(as_text=True)
    assert admin.post(f"/clients/{contoso.id}/consent-link", token=False).status_code == 302
    assert redis.keys("tidemark:oauth-state:*") == []


def consent_started(admin, contoso):
    admin.post("/settings/microsoft-365", FORM)
    url = link_in(admin.post(f"/clients/{contoso.id}/consent-link").get_data(as_text=True))
    return parse_qs(urlsplit(url).query)["state"][0]


def consented(app, admin, contoso, login) -> dict:
    """The customer's admin accepts at Microsoft (the test server): the query it sends back."""
    login.register_client(APP_ID, SECRET, grant_types=["client_credentials"],
                          redirect_uris=[app.config["TIDEMARK_PORTAL_URL"].rstrip("/") + "/oauth/callback"])
    login.tenant_id = TENANT_ID
    admin.post("/settings/microsoft-365", FORM)
    return login.approve(link_in(admin.post(f"/clients/{contoso.id}/consent-link").get_data(as_text=True)))


def callback(make_browser, state, **answer):
    """The customer's admin comes back from Microsoft, in a browser with no portal session."""
    resp = make_browser().get("/oauth/callback?" + urlencode({"state": state, **answer}))
    return resp.get_data(as_text=True), resp.status_code


def test_a_granted_consent_thanks_the_customers_admin_and_the_client_shows_its_tenant(app, two_msps, admin, make_browser,
                                                                                     redis, microsoft_login):
    msp, contoso, _beta, _eve = two_msps
    answer = consented(app, admin, contoso, microsoft_login)
    state = answer.pop("state")
    body, status = callback(make_browser, state, **answer)
    assert status == 200
    assert f"Your Microsoft 365 tenant <code>{TENANT_ID}</code> is connected to Acme MSP" in body
    assert db.session.scalar(select(TenantConsent)).tenant == TENANT_ID
    page = admin.get(f"/clients/{contoso.id}").get_data(as_text=True)
    assert f"Connected to tenant <code>{TENANT_ID}</code>" in page
    assert "Microsoft 365 tenant consented" in page and "customer&#39;s admin (link from ana@acme.example)" in page
    body, status = callback(make_browser, state, **answer)  # replayed
    assert status == 400 and "was already used" in body and "Sign in" not in body


def test_a_declined_consent_is_told_in_plain_words_and_nothing_is_stored(two_msps, admin, make_browser, redis):
    _msp, contoso, _beta, _eve = two_msps
    state = consent_started(admin, contoso)
    body, status = callback(make_browser, state, error="access_denied", error_subcode="cancel",
                            error_description="AADSTS65004: User declined to consent to access the app.")
    assert status == 400
    assert "the person signing in declined the consent (AADSTS65004)" in body
    assert "ask Acme MSP for a new consent link" in body
    assert db.session.scalar(select(TenantConsent)) is None


def test_a_tenant_the_browser_names_but_microsoft_does_not_confirm_is_refused_in_plain_words(
        app, two_msps, admin, make_browser, redis, microsoft_login):
    _msp, contoso, _beta, _eve = two_msps
    other = "0badc0de-0000-4000-8000-000000000000"
    answer = consented(app, admin, contoso, microsoft_login)
    body, status = callback(make_browser, answer.pop("state"), **{**answer, "tenant": other})
    assert status == 400 and "Not connected" in body
    assert (f"Microsoft did not confirm it for the tenant {other}: wrong tenant: the app is not registered or "
            "consented in the tenant") in body and "AADSTS700016" in body
    assert "ask Acme MSP for a new consent link" in body
    assert db.session.scalar(select(TenantConsent)) is None


def test_creating_another_link_does_not_cancel_the_first_both_work(app, two_msps, admin, make_browser, redis,
                                                                   microsoft_login):
    _msp, contoso, _beta, _eve = two_msps
    # docs/microsoft-365.md: "Creating another link does not cancel this one."
    first = consented(app, admin, contoso, microsoft_login)
    second = microsoft_login.approve(link_in(admin.post(f"/clients/{contoso.id}/consent-link").get_data(as_text=True)))
    assert first["state"] != second["state"]
    for answer in (first, second):
        body, status = callback(make_browser, answer.pop("state"), **answer)
        assert status == 200 and f"Your Microsoft 365 tenant <code>{TENANT_ID}</code> is connected" in body
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "Microsoft 365 tenant consented")).all()
    assert len(entries) == 2


def test_the_page_warns_before_the_secret_expires(two_msps, admin):
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()  # the page counts days in UTC, whatever the machine's zone
    soon = (today + timedelta(days=3)).isoformat()
    admin.post("/settings/microsoft-365", {**FORM, "secret_expires": soon})
    assert "The client secret expires in 3 days" in admin.get("/settings/microsoft-365").get_data(as_text=True)
    past = (today - timedelta(days=2)).isoformat()
    admin.post("/settings/microsoft-365", {**FORM, "client_secret": "", "secret_expires": past})
    assert "expired 2 days ago" in admin.get("/settings/microsoft-365").get_data(as_text=True)


def test_an_unknown_state_is_refused_and_a_signed_in_admin_of_another_msp_may_pass_the_link_on(
        app, two_msps, admin, make_browser, redis, microsoft_login):
    _msp, contoso, _beta, eve = two_msps
    body, status = callback(make_browser, "never-made", admin_consent="True", tenant=TENANT_ID)
    assert status == 400 and "Ask your service provider for a new one" in body
    assert db.session.scalar(select(TenantConsent)) is None
    # The link is the key, whoever's browser opens it (here one signed in to another MSP).
    resp = eve.get("/oauth/callback?" + urlencode(consented(app, admin, contoso, microsoft_login)))
    assert resp.status_code == 200 and "is connected to Acme MSP" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(select(TenantConsent)).client_id == contoso.id


def test_a_mailbox_signing_in_as_the_msp_app_says_so_on_its_page(app, two_msps, admin, world):
    msp, contoso, _beta, _eve = two_msps
    admin.post("/settings/microsoft-365", FORM)
    db.session.add(TenantConsent(msp_id=msp.id, client_id=contoso.id, tenant=TENANT_ID, app_id=APP_ID))
    db.session.commit()
    box = world.mailbox(contoso, address="helpdesk@contoso.com", password=None, host="outlook.office365.com",
                        auth="oauth2", oauth={"provider": "microsoft", "flow": "app"})
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "<dt>Client id</dt><dd>your MSP's Microsoft 365 app</dd>" in page
    assert "Contoso</a> consented from" in page
    assert "2027-06-30" in page  # the MSP app's secret expiry

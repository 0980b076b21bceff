"""An app-only Microsoft mailbox whose token Microsoft refused ("reconnect needed") is not stuck:
an admin tries again from its page, and a new secret or certificate of the MSP's app, or the
customer's consent, lets the next connection ask Microsoft again by itself."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Mailbox, TenantConsent
from portal.services import commit, oauth_states, tenant_consent
from portal.services import microsoft_app as app_svc
from portal.services.mailbox_tokens import access_token
from portal.transport.base import TransportError
from tests.oauth_server import MICROSOFT_BAD_SECRET
from tests.services.test_tenant_consent import APP_ID, SECRET, TENANT_ID, keys

REFUSED = "wrong client secret: use the secret's Value from Entra ID, not its Secret ID (AADSTS7000215)"


def fresh(mailbox_id):
    db.session.expire_all()
    return db.session.get(Mailbox, mailbox_id)


def refused(app, mailbox, login):
    """Microsoft refuses the app's secret: the mailbox needs reconnecting."""
    login.fail_next(MICROSOFT_BAD_SECRET, status=401)
    with pytest.raises(TransportError):
        access_token(mailbox, keys(app))
    commit()
    assert (mailbox.oauth.state, mailbox.oauth.state_reason) == ("reconnect needed", REFUSED)


@pytest.fixture
def contoso(app, world, msp, redis, microsoft_login):
    """Contoso, consented to the MSP's app at Microsoft (the test server), with the app-only
    mailbox helpdesk@contoso.com signing in as that app; technician tom."""
    world.user(msp, email="tom@acme.example", role="technician")
    microsoft_login.register_client(APP_ID, SECRET, grant_types=["client_credentials"],
                                    redirect_uris=[oauth_states.redirect_uri(app.config["TIDEMARK_PORTAL_URL"])])
    microsoft_login.tenant_id = TENANT_ID
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": SECRET}, keys=keys(app), actor=None)
    client = world.client(msp, "Contoso")
    db.session.add(TenantConsent(msp_id=msp.id, client_id=client.id, tenant=TENANT_ID, app_id=APP_ID))
    microsoft_login.admin_consents.append((APP_ID, TENANT_ID))
    commit()
    return client


def app_only(world, client, address="helpdesk@contoso.com", **oauth):
    return world.mailbox(client, address=address, password=None, host="outlook.office365.com", auth="oauth2",
                         oauth={"provider": "microsoft", "flow": "app", **oauth})


def history(mailbox_id):
    return db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "mailbox",
                                                       AuditEntry.record_id == mailbox_id)
                              .order_by(AuditEntry.id)).all()


def test_try_again_asks_microsoft_now_and_says_what_it_answered(app, admin, contoso, world, microsoft_login,
                                                                 make_browser):
    box = app_only(world, contoso)
    refused(app, box, microsoft_login)
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert "Try again</button>" in page and f'action="/mailboxes/{box.id}/try-again"' in page
    # Still refused: Microsoft's words, and the mailbox still needs reconnecting.
    microsoft_login.fail_next(MICROSOFT_BAD_SECRET, status=401)
    resp = admin.post(f"/mailboxes/{box.id}/try-again")
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/mailboxes/{box.id}#sign-in")
    assert f"Still not signed in: the sign-in service refused the OAuth2 grant of helpdesk@contoso.com: {REFUSED}" \
        in admin.get(resp.headers["Location"]).get_data(as_text=True).replace("&#39;", "'")
    assert fresh(box.id).oauth.state == "reconnect needed"
    # Mended at Microsoft: a token now, connected.
    resp = admin.post(f"/mailboxes/{box.id}/try-again")
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Signed in as the app: helpdesk@contoso.com has a token again." in page and "Try again</button>" not in page
    row = fresh(box.id).oauth
    assert row.state == "connected" and microsoft_login.token_requests[-1]["grant_type"] == "client_credentials"
    assert history(box.id)[-1].action == "OAuth2 connected" and history(box.id)[-1].actor_label == "ana@acme.example"


def test_try_again_is_for_admins_of_the_mailboxs_msp_with_the_csrf_token(app, admin, contoso, world, microsoft_login,
                                                                          make_browser):
    box = app_only(world, contoso)
    refused(app, box, microsoft_login)
    sent = len(microsoft_login.token_requests)
    assert admin.post(f"/mailboxes/{box.id}/try-again", token=False).status_code == 302
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert "Try again</button>" not in tom.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert tom.post(f"/mailboxes/{box.id}/try-again").status_code == 403
    beta = world.msp("Beta MSP")
    world.user(beta, email="eve@beta.example")
    eve = make_browser()
    eve.sign_in("eve@beta.example")
    assert eve.post(f"/mailboxes/{box.id}/try-again").status_code == 404
    assert len(microsoft_login.token_requests) == sent and fresh(box.id).oauth.state == "reconnect needed"


def test_a_new_secret_of_the_msp_app_lets_its_mailboxes_try_again_by_themselves(app, contoso, world, msp,
                                                                                 microsoft_login):
    box = app_only(world, contoso)
    own = app_only(world, contoso, address="own@contoso.com", client_id="own-app", client_secret="own-secret")
    refused(app, box, microsoft_login)
    refused(app, own, microsoft_login)
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": ""}, keys=keys(app), actor=None)
    assert fresh(box.id).oauth.state == "reconnect needed"  # saved without a new secret: nothing mended
    app_svc.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": "a-new-secret"}, keys=keys(app), actor=None)
    commit()
    assert (fresh(box.id).oauth.state, fresh(own.id).oauth.state) == ("not connected", "reconnect needed")
    entry = history(box.id)[-1]
    assert entry.action == "OAuth2 to be tried again" and entry.changes == {
        "oauth.grant": ["reconnect needed", "not connected"],
        "reason": [None, "the MSP's Microsoft 365 app has a new client secret or certificate"]}
    microsoft_login.clients[APP_ID].client_secret = "a-new-secret"
    assert microsoft_login.token(access_token(fresh(box.id), keys(app))).client_id == APP_ID


def test_the_customers_consent_lets_its_mailboxes_try_again_by_themselves(app, contoso, world, msp,
                                                                          microsoft_login):
    berlin = world.client(contoso, "Contoso Berlin")
    box = app_only(world, berlin)
    own_tenant = app_only(world, contoso, address="own@contoso.com", tenant="contoso.onmicrosoft.com")
    elsewhere = app_only(world, world.client(msp, "Fabrikam"), address="desk@fabrikam.example", tenant=TENANT_ID)
    for mailbox in (box, own_tenant, elsewhere):
        refused(app, mailbox, microsoft_login)
    link = tenant_consent.create_consent_link(contoso, actor=world.user(msp, email="ana@acme.example"),
                                              portal_url=app.config["TIDEMARK_PORTAL_URL"])
    answer = microsoft_login.approve(link.url)
    started = oauth_states.take(parse_qs(urlsplit(link.url).query)["state"][0], user_id=None)
    assert tenant_consent.finish_tenant_consent(started, answer, keys(app)).problem is None
    commit()
    states = [fresh(m.id).oauth.state for m in (box, own_tenant, elsewhere)]
    assert states == ["not connected", "reconnect needed", "reconnect needed"]
    assert history(box.id)[-1].changes["reason"] == [None, f"the customer's admin consented from the tenant {TENANT_ID}"]

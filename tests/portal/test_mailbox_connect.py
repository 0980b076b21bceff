"""Connect, the OAuth2 callback and Disconnect of a mailbox, against the local authorisation server:
the grant stored on the right mailbox for the person who started it, once; refusals store nothing."""

from __future__ import annotations

from ipaddress import ip_network
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import select

from portal import crypto
from portal.extensions import db
from portal.models import AuditEntry, Mailbox, SmtpServer, User
from portal.oauth import providers, start_authorisation
from portal.services import mailbox_connect, oauth_states
from portal.services import mailbox_oauth as oauth_svc
from tests.conftest import free_port
from tests.oauth_server import GOOGLE_INVALID_GRANT

ACCOUNT = "helpdesk@contoso.example"
EXPIRED = "This sign-in link has expired or was started by someone else"


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def oauth_mailbox(world, app, client, server, address="helpdesk@contoso.example", **oauth):
    settings = {"provider": "generic", "flow": "delegated", "client_id": "tidemark", "client_secret": "s3cret-client",
                "authorize_url": server.url + "/authorize", "token_url": server.url + "/token",
                "scopes": ["openid", "mail"], **oauth}
    return world.mailbox(client, address=address, username=ACCOUNT, password=None, auth="oauth2", oauth=settings)


@pytest.fixture
def desk(app, world, msp, redis, oauth_server):
    """Acme's technician tom and an OAuth2 mailbox, not connected (`admin` signs Acme's ana in)."""
    world.user(msp, email="tom@acme.example", role="technician")
    oauth_server.register_client(redirect_uris=[oauth_states.redirect_uri(app.config["TIDEMARK_PORTAL_URL"])])
    return oauth_mailbox(world, app, msp, oauth_server)


def fresh(mailbox_id):
    db.session.expire_all()
    return db.session.get(Mailbox, mailbox_id)


def start(browser, mailbox) -> str:
    resp = browser.post(f"/mailboxes/{mailbox.id}/connect")
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return resp.headers["Location"]


def callback(browser, query: dict):
    return browser.get("/oauth/callback?" + urlencode(query))


def test_connect_signs_in_at_the_provider_and_stores_the_grant(app, admin, desk, oauth_server):
    location = start(admin, desk)
    sent = parse_qs(urlsplit(location).query)
    assert location.startswith(oauth_server.url + "/authorize?")
    assert sent["login_hint"] == [ACCOUNT] and sent["scope"] == ["openid mail"]
    assert sent["redirect_uri"] == [app.config["TIDEMARK_PORTAL_URL"].rstrip("/") + "/oauth/callback"]
    assert sent["code_challenge_method"] == ["S256"]

    resp = callback(admin, oauth_server.approve(location))
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/mailboxes/{desk.id}#sign-in")
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"Connected to {ACCOUNT}." in page
    row = fresh(desk.id).oauth
    assert (row.state, row.account) == ("connected", ACCOUNT)
    assert oauth_server.token(oauth_svc.access_token_of(row, keys(app))).username == ACCOUNT
    assert oauth_svc.refresh_token_of(row, keys(app))
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "OAuth2 connected")).one()
    assert entry.actor_label == "ana@acme.example"


@pytest.mark.parametrize("username, shared, asks_shared", [
    ("", None, False), ("helpdesk@contoso.example", None, False),  # its own mailbox
    ("tom@contoso.example", None, True), ("", "support@contoso.example", True)])  # a delegate's token
def test_delegated_graph_on_a_shared_mailbox_asks_for_the_shared_scopes(admin, world, msp, redis, username, shared,
                                                                        asks_shared):
    mailbox = world.mailbox(msp, address="helpdesk@contoso.example", protocol="graph", auth="oauth2", host="",
                            username=username, password=None, shared_mailbox=shared,
                            oauth={"provider": "microsoft", "flow": "delegated", "tenant": "contoso.example",
                                   "client_id": "graph-app", "client_secret": "s3cret"})
    sent = parse_qs(urlsplit(start(admin, mailbox)).query)
    scopes = sent["scope"][0].split()
    assert {"https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"} <= set(scopes)
    wanted = {"https://graph.microsoft.com/Mail.ReadWrite.Shared", "https://graph.microsoft.com/Mail.Send.Shared"}
    assert (wanted <= set(scopes)) is asks_shared and (wanted & set(scopes) == set()) is not asks_shared


def test_the_page_shows_the_app_the_state_and_the_one_redirect_uri(app, admin, desk):
    page = admin.get(f"/mailboxes/{desk.id}")
    text = page.get_data(as_text=True)
    assert "not connected" in text and "tidemark" in text and "generic" in text
    assert app.config["TIDEMARK_PORTAL_URL"].rstrip("/") + "/oauth/callback" in text
    # Without script the Connect form's 303 leads to the provider: the page's policy allows it.
    assert "form-action 'self' http://127.0.0.1:" in page.headers["Content-Security-Policy"]


def test_the_page_finds_the_sign_in_origin_without_decrypting_a_secret(app, admin, desk, monkeypatch):
    opened = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda keys, value: opened.append(value) or real(keys, value))
    page = admin.get(f"/mailboxes/{desk.id}")
    assert page.status_code == 200 and "form-action 'self' http://127.0.0.1:" in page.headers["Content-Security-Policy"]
    assert opened == []


def test_a_replayed_callback_is_refused_and_changes_nothing(app, admin, desk, oauth_server):
    answer = oauth_server.approve(start(admin, desk))
    assert callback(admin, answer).status_code == 303
    first = oauth_svc.access_token_of(fresh(desk.id).oauth, keys(app))
    again = callback(admin, answer)
    assert again.status_code == 400 and EXPIRED in again.get_data(as_text=True)
    assert oauth_svc.access_token_of(fresh(desk.id).oauth, keys(app)) == first
    assert len(oauth_server.token_requests) == 1  # the code was not even tried again


def test_the_state_is_bound_to_the_person_who_started_it(app, admin, make_browser, world, msp, desk, oauth_server):
    world.user(msp, email="bob@acme.example")
    bob = make_browser()
    bob.sign_in("bob@acme.example")
    answer = oauth_server.approve(start(admin, desk))
    resp = callback(bob, answer)
    assert resp.status_code == 400 and EXPIRED in resp.get_data(as_text=True)
    # A stolen state is gone, for its starter too.
    assert callback(admin, answer).status_code == 400
    assert fresh(desk.id).oauth.state == "not connected" and oauth_server.token_requests == []


def test_an_unknown_or_missing_state_is_refused(admin, desk):
    for query in ({"code": "x", "state": "made-up"}, {"code": "x"}):
        resp = callback(admin, query)
        assert resp.status_code == 400 and EXPIRED in resp.get_data(as_text=True)


def test_the_providers_error_is_shown_in_plain_words_and_nothing_is_stored(app, admin, desk, oauth_server):
    answer = oauth_server.approve(start(admin, desk), accept=False)
    assert answer["error"] == "access_denied"
    resp = callback(admin, answer)
    assert resp.status_code == 303
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not connected: the person signing in declined the consent (access_denied)." in page
    row = fresh(desk.id).oauth
    assert row.state == "not connected" and row.refresh_token_encrypted is None and row.account is None
    assert oauth_server.token_requests == []


def test_a_refused_code_exchange_is_shown_and_nothing_is_stored(app, admin, desk, oauth_server):
    answer = oauth_server.approve(start(admin, desk))
    oauth_server.fail_next(GOOGLE_INVALID_GRANT)
    resp = callback(admin, answer)
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not connected: the grant was revoked or has expired" in page and "(invalid_grant)" in page
    assert fresh(desk.id).oauth.access_token_encrypted is None


def test_posts_without_csrf_token_are_refused(app, admin, desk, redis):
    admin.get(f"/mailboxes/{desk.id}")
    resp = admin.post(f"/mailboxes/{desk.id}/connect", token=False)
    assert resp.status_code == 302 and "oauth" not in resp.headers["Location"]
    assert redis.keys("tidemark:oauth-state:*") == []
    oauth_svc.store_grant(fresh(desk.id).oauth, keys(app), access_token="a", access_expires_at=None,
                          refresh_token="r", account=ACCOUNT)
    db.session.commit()
    admin.post(f"/mailboxes/{desk.id}/disconnect", token=False)
    assert fresh(desk.id).oauth.state == "connected"


def test_a_technician_may_neither_connect_nor_disconnect(app, make_browser, desk, redis):
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.post(f"/mailboxes/{desk.id}/connect").status_code == 403
    assert tom.post(f"/mailboxes/{desk.id}/disconnect").status_code == 403
    assert redis.keys("tidemark:oauth-state:*") == []
    card = tom.get(f"/mailboxes/{desk.id}").get_data(as_text=True).split('id="sign-in"')[1].split("</section>")[0]
    assert "Connect" not in card  # the card only: the history below says "Connection timeout"


def test_another_msps_mailbox_is_404_at_the_buttons_and_at_the_callback(app, admin, world, desk, oauth_server):
    theirs = world.msp("Theirs MSP")
    their_box = oauth_mailbox(world, app, theirs, oauth_server, address="desk@theirs.example")
    assert admin.post(f"/mailboxes/{their_box.id}/connect").status_code == 404
    assert admin.post(f"/mailboxes/{their_box.id}/disconnect").status_code == 404
    # A started sign-in naming another MSP's mailbox (the id is all a state holds) is not finished.
    found, app_creds = mailbox_connect.app_credentials(their_box, keys(app))
    started = start_authorisation(found, app_creds, oauth_states.redirect_uri(app.config["TIDEMARK_PORTAL_URL"]),
                                  ["openid"])
    oauth_states.remember("mailbox", msp_id=desk.msp_id, user_id=_user_id("ana@acme.example"),
                          subject_id=their_box.id, authorisation=started,
                          app_id=app_creds.client_id)
    resp = callback(admin, oauth_server.approve(started.url))
    assert resp.status_code == 404
    assert fresh(their_box.id).oauth.state == "not connected"


def _user_id(email):
    return db.session.scalar(select(User.id).where(User.email == email))


def test_connect_refuses_an_app_only_mailbox_in_plain_words(app, admin, world, msp, oauth_server, redis):
    box = oauth_mailbox(world, app, msp, oauth_server, address="app@acme.example", flow="app")
    resp = admin.post(f"/mailboxes/{box.id}/connect")
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/mailboxes/{box.id}")
    assert "no one needs to sign in for it" in admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert redis.keys("tidemark:oauth-state:*") == []


def connected(app, admin, desk, oauth_server):
    callback(admin, oauth_server.approve(start(admin, desk)))
    row = fresh(desk.id).oauth
    assert row.state == "connected"
    return oauth_svc.refresh_token_of(row, keys(app))


@pytest.fixture
def google_desk(app, world, msp, desk, oauth_server, monkeypatch):
    """A Google mailbox of Acme, Google's sign-in and token endpoints being the local server."""
    monkeypatch.setattr(providers, "GOOGLE_ACCOUNTS", oauth_server.url)
    monkeypatch.setattr(providers, "GOOGLE_TOKENS", oauth_server.url)
    return oauth_mailbox(world, app, msp, oauth_server, address="gmail@acme.example", provider="google",
                         authorize_url=None, token_url=None, scopes=[])


def test_disconnect_revokes_at_google_and_forgets_the_grant(app, admin, google_desk, oauth_server):
    location = start(admin, google_desk)
    assert location.startswith(oauth_server.url + "/o/oauth2/v2/auth?") and "access_type=offline" in location
    refresh_token = connected(app, admin, google_desk, oauth_server)
    resp = admin.post(f"/mailboxes/{google_desk.id}/disconnect")
    assert resp.status_code == 303
    assert f"Disconnected {google_desk.address}." in admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert oauth_server.by_refresh[refresh_token].refresh_revoked
    row = fresh(google_desk.id).oauth
    assert (row.state, row.account, row.refresh_token_encrypted, row.access_token_encrypted) == (
        "not connected", None, None, None)
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "OAuth2 disconnected")).one()
    assert entry.changes["oauth.grant"] == [f"connected as {ACCOUNT}", "not connected"]


def test_a_failed_revocation_is_shown_and_the_grant_is_dropped_anyway(app, admin, google_desk, oauth_server,
                                                                      monkeypatch):
    refresh_token = connected(app, admin, google_desk, oauth_server)
    monkeypatch.setattr(providers, "GOOGLE_TOKENS", f"http://127.0.0.1:{free_port()}")  # Google out of reach
    resp = admin.post(f"/mailboxes/{google_desk.id}/disconnect", htmx=True)
    assert resp.headers["HX-Redirect"].endswith(f"/mailboxes/{google_desk.id}")
    page = admin.get(resp.headers["HX-Redirect"]).get_data(as_text=True)
    assert "did not confirm the revocation" in page and "Connection refused" in page
    assert fresh(google_desk.id).oauth.state == "not connected"
    assert not oauth_server.by_refresh[refresh_token].refresh_revoked


def test_a_generic_providers_grant_is_forgotten_without_revoking_it(app, admin, desk, oauth_server):
    # Its settings hold no revocation URL (README: Disconnect): the server is not asked.
    refresh_token = connected(app, admin, desk, oauth_server)
    resp = admin.post(f"/mailboxes/{desk.id}/disconnect")
    assert f"Disconnected {desk.address}." in admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert fresh(desk.id).oauth.state == "not connected"
    assert not oauth_server.by_refresh[refresh_token].refresh_revoked


def test_a_connect_coming_back_signed_out_signs_in_first_and_keeps_its_state(app, admin, make_browser, desk,
                                                                             oauth_server):
    answer = oauth_server.approve(start(admin, desk))
    stranger = make_browser()  # the same callback, in a browser without the session
    resp = callback(stranger, answer)
    assert resp.status_code == 302 and "/sign-in" in resp.headers["Location"]
    assert callback(admin, answer).status_code == 303  # still there for the person who started it


def test_microsoft_asks_for_imap_and_smtp_when_the_outgoing_server_uses_the_grant(app, admin, world, msp, redis):
    box = world.mailbox(msp, address="helpdesk@contoso.com", username="helpdesk@contoso.com", password=None,
                        auth="oauth2", oauth={"provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                                              "client_id": "app-1"})
    server = SmtpServer(mailbox_id=box.id, host="smtp.office365.com", port=587, security="starttls",
                        username="helpdesk@contoso.com", auth="oauth2")
    db.session.add(server)
    db.session.commit()
    location = start(admin, box)
    assert location.startswith("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?")
    sent = parse_qs(urlsplit(location).query)
    assert sent["scope"][0].split() == ["https://outlook.office.com/IMAP.AccessAsUser.All",
                                        "https://outlook.office.com/SMTP.Send", "offline_access", "openid", "profile"]
    assert sent["login_hint"] == ["helpdesk@contoso.com"] and sent["prompt"] == ["select_account"]
    assert len(redis.keys("tidemark:oauth-state:*")) == 1


def test_with_several_msps_the_code_goes_only_to_allowed_addresses(app, admin, world, desk, oauth_server):
    world.msp("Other MSP")  # now admin-typed URLs are held to the address rule
    answer = oauth_server.approve(start(admin, desk))
    resp = callback(admin, answer)
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not connected: 127.0.0.1" in page and "allow its network" in page
    assert oauth_server.token_requests == []  # refused before anything was sent
    assert fresh(desk.id).oauth.state == "not connected"

    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = [ip_network("127.0.0.0/8")]
    callback(admin, oauth_server.approve(start(admin, desk)))
    assert fresh(desk.id).oauth.state == "connected"


def test_a_microsoft_grant_is_forgotten_with_a_word_on_ending_it_in_entra(app, admin, world, msp):
    box = world.mailbox(msp, address="helpdesk@contoso.com", username="helpdesk@contoso.com", password=None,
                        auth="oauth2", oauth={"provider": "microsoft", "tenant": "organizations", "client_id": "app-1"})
    oauth_svc.store_grant(box.oauth, keys(app), access_token="a", access_expires_at=None, refresh_token="r",
                          account="helpdesk@contoso.com")
    db.session.commit()
    resp = admin.post(f"/mailboxes/{box.id}/disconnect")
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Disconnected helpdesk@contoso.com." in page and "revoke the account&#39;s sessions in Entra ID" in page
    assert fresh(box.id).oauth.refresh_token_encrypted is None

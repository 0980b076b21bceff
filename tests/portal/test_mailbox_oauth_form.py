"""The mailbox form's OAuth2 settings: stored as typed (the secret encrypted, never shown again),
messages next to their field, another provider's hidden fields ignored, and the presets offered."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox
from portal.services import mailbox_oauth as oauth_svc
from tests.portal.test_mailbox_forms import form

MICROSOFT = {"address": "helpdesk@contoso.com", "username": "helpdesk@contoso.com", "protocol": "imap",
             "host": "outlook.office365.com", "port": "993", "security": "ssl", "password": "", "auth": "oauth2",
             "oauth_provider": "microsoft", "oauth_flow": "delegated", "oauth_tenant": "contoso.onmicrosoft.com",
             "oauth_client_id": "11111111-2222-3333-4444-555555555555", "oauth_client_secret": "sec~ret-1",
             "oauth_secret_expires": "2027-06-30", "oauth_scopes": ""}


def stored():
    db.session.expire_all()
    return db.session.scalar(select(Mailbox))


def test_an_oauth2_mailbox_is_created_from_the_form(app, admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, **MICROSOFT))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = stored()
    row = box.oauth
    assert (box.auth, box.password_encrypted, row.provider, row.flow, row.tenant) == (
        "oauth2", None, "microsoft", "delegated", "contoso.onmicrosoft.com")
    assert (row.client_id, row.secret_expires.isoformat(), row.scopes, row.state) == (
        "11111111-2222-3333-4444-555555555555", "2027-06-30", [], "not connected")
    assert oauth_svc.client_secret_of(row, app.config["TIDEMARK_ENCRYPTION_KEY"]) == "sec~ret-1"
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert "sec~ret-1" not in page and 'value="contoso.onmicrosoft.com"' in page
    assert "stored; leave empty to keep it" in page
    # The one redirect URI to register in the app, on the new and the edit form alike.
    shown = ("Register this redirect URI in the app, exactly: <code>"
             + app.config["TIDEMARK_PORTAL_URL"].rstrip("/") + "/oauth/callback</code>")
    assert shown in page and shown in admin.get("/mailboxes/new").get_data(as_text=True)

    # Saved again as shown (the secret left empty) keeps the secret; a hidden tenant of another
    # provider neither errs nor stays.
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(msp, **{**MICROSOFT, "oauth_client_secret": ""}))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert oauth_svc.client_secret_of(stored().oauth, app.config["TIDEMARK_ENCRYPTION_KEY"]) == "sec~ret-1"
    google = {**MICROSOFT, "host": "imap.gmail.com", "oauth_provider": "google"}
    resp = admin.post(f"/mailboxes/{box.id}/edit", form(msp, **google))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert (stored().oauth.provider, stored().oauth.tenant) == ("google", None)


def test_messages_land_next_to_the_oauth_fields_and_nothing_is_stored(admin, msp):
    generic = {**MICROSOFT, "oauth_provider": "generic", "oauth_client_id": "", "oauth_token_url": "ftp://x",
               "oauth_authorize_url": ""}
    resp = admin.post("/mailboxes/new", form(msp, **generic))
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    for name, words in (("oauth_client_id", "client id (application id)"),
                        ("oauth_token_url", "is not a URL like"),
                        ("oauth_authorize_url", "needs its authorisation URL")):
        errors = re.search(rf'<ul class="errors" id="{name}-error">(.*?)</ul>', page, re.S)
        assert errors and words in errors.group(1), name
        assert re.search(rf'<[^>]*id="{name}"[^>]*aria-invalid="true"|<[^>]*aria-invalid="true"[^>]*id="{name}"',
                         page), name
    assert stored() is None


def test_a_graph_mailbox_from_the_form_ignores_a_server_typed_before(admin, msp):
    graph = {**MICROSOFT, "protocol": "graph", "host": "outlook.office365.com", "api_url": "",
             "after_action_imap": "seen"}
    resp = admin.post("/mailboxes/new", form(msp, **graph))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = stored()
    assert (box.protocol, box.host, box.api_url) == ("graph", "", "https://graph.microsoft.com/v1.0")
    card = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True).split('id="sign-in"')[1]
    assert "<dt>API URL</dt><dd>https://graph.microsoft.com/v1.0</dd>" in card
    assert "<dt>Tenant</dt><dd>contoso.onmicrosoft.com</dd>" in card


def test_the_presets_are_offered_for_script_to_fill(admin, msp, world):
    page = admin.get("/mailboxes/new").get_data(as_text=True)
    presets = {name: json.loads(values) for values, name in
               re.findall(r"<button type=\"button\" data-preset='([^']*)'>([^<]+)</button>", page)}
    assert presets["Microsoft 365"] == {"protocol": "imap", "host": "outlook.office365.com", "port": "993",
                                        "security": "ssl", "auth": "oauth2", "oauth_provider": "microsoft"}
    assert presets["Google Workspace"]["host"] == "imap.gmail.com"
    assert presets["Microsoft 365 (Graph)"]["protocol"] == "graph"
    assert re.search(r'<div class="presets" data-presets hidden', page)  # without script: typed by hand
    box = world.mailbox(msp, username="desk@acme.example")
    outgoing = admin.get(f"/mailboxes/{box.id}/outgoing").get_data(as_text=True)
    assert 'data-preset-username="desk@acme.example"' in outgoing and "smtp.office365.com" in outgoing
    assert '"auth": "oauth2"' not in outgoing  # a password mailbox has no grant to send with
    box = world.mailbox(msp, address="helpdesk@contoso.com", password=None, auth="oauth2",
                        oauth={"provider": "google", "client_id": "app-1"})
    outgoing = admin.get(f"/mailboxes/{box.id}/outgoing").get_data(as_text=True)
    assert '"auth": "oauth2"' in outgoing and "smtp.gmail.com" in outgoing


def test_a_graph_mailbox_sets_its_folders_and_after_action_in_the_form(admin, msp):
    graph = {**MICROSOFT, "protocol": "graph", "api_url": "", "folders": "inbox\nSupport",
             "after_action_imap": "move", "processed_folder": "Archive"}
    resp = admin.post("/mailboxes/new", form(msp, **graph))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = stored()
    assert (box.folders, box.after_action, box.processed_folder) == (["inbox", "Support"], "move", "Archive")
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    fetching = page.split('data-section="fetching"')[1].split("</details>")[0]
    block = fetching.split('data-show-when="protocol=imap graph"')[1].split(">")[0]
    assert "hidden" not in block  # shown for a Graph mailbox, not only for IMAP
    assert "Support" in fetching

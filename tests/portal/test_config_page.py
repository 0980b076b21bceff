"""The configuration page: YAML download (secrets only when asked, and audited) and upload
with a dry run before anything is applied, all inside the admin's own MSP."""

import io
import textwrap

import pytest
import yaml
from sqlalchemy import func, select

from portal.models import AuditEntry, CannedResponse, Client, EmailTemplate, Mailbox, SmtpServer
from portal.outbound import servers as outbound_svc

UPLOAD = textwrap.dedent("""
    clients:
      - name: Acme MSP
        children:
          - name: Contoso
            allow: [contoso.com]
            waterline: "Kind regards"
          - name: Fabrikam
            allow: [fabrikam.example]
    mailboxes:
      - address: help@acme.example
        client: Fabrikam
        host: 127.0.0.1
        username: help
        password: "helppw-secret"
""")


@pytest.fixture
def setup(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"], waterline="Best regards")
    world.user(msp, email="ana@acme.example")
    world.user(msp, email="tom@acme.example", role="technician")
    world.mailbox(msp, address="support@acme.example", password="supportpw-secret")
    theirs = world.msp("Theirs MSP")
    world.client(theirs, "Their Customer")
    world.mailbox(theirs, address="desk@theirs.example", password="theirpw-secret")
    return msp, theirs


@pytest.fixture
def admin(browser, setup):
    browser.sign_in("ana@acme.example")
    return browser


def upload(browser, text, name="config.yaml"):
    return browser.post("/settings/configuration/import",
                        {"action": "preview", "file": (io.BytesIO(text.encode()), name)},
                        content_type="multipart/form-data")


def count(db, model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_technicians_get_403(make_browser, setup):
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get("/settings/configuration").status_code == 403
    assert tech.post("/settings/configuration/export").status_code == 403
    assert upload(tech, UPLOAD).status_code == 403


def test_download_holds_only_my_msp_and_no_secrets_by_default(db, admin):
    page = admin.get("/settings/configuration").get_data(as_text=True)
    assert 'name="with_secrets"' in page and "Download YAML" in page
    resp = admin.post("/settings/configuration/export")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="tidemark-acme-msp-')
    data = yaml.safe_load(resp.get_data(as_text=True))
    assert [c["name"] for c in data["clients"]] == ["Acme MSP"]
    assert [c["name"] for c in data["clients"][0]["children"]] == ["Contoso"]
    assert [m["address"] for m in data["mailboxes"]] == ["support@acme.example"]
    assert {u["email"] for u in data["users"]} == {"ana@acme.example", "tom@acme.example"}
    text = resp.get_data(as_text=True)
    assert "secret" not in text and "Theirs" not in text
    # Two MSPs share this installation: the installation's gateway is not an MSP admin's to see.
    assert "smtp" not in data
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "configuration")) is None


def test_download_with_secrets_needs_the_box_and_is_audited(db, admin, setup):
    resp = admin.post("/settings/configuration/export", {"with_secrets": "1"})
    text = resp.get_data(as_text=True)
    assert "supportpw-secret" in text and "theirpw-secret" not in text
    assert resp.headers["Content-Disposition"].endswith('-with-secrets.yaml"')
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "configuration"))
    assert entry.action == "downloaded with secrets" and entry.actor_label == "ana@acme.example"
    assert entry.msp_id == setup[0].id
    assert "downloaded with secrets" in admin.get("/settings/configuration").get_data(as_text=True)


def test_a_dry_run_shows_what_would_change_and_changes_nothing(db, admin):
    clients, mailboxes, entries = count(db, Client), count(db, Mailbox), count(db, AuditEntry)
    resp = upload(admin, UPLOAD)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "<strong>2</strong> to create, <strong>1</strong> to update" in body
    assert "Fabrikam</td><td>would be created" in body and "Contoso</td><td>would be updated" in body
    assert "help@acme.example</td><td>would be created" in body
    assert count(db, Client) == clients and count(db, Mailbox) == mailboxes and count(db, AuditEntry) == entries
    assert db.session.scalar(select(Client).where(Client.name == "Contoso")).waterline == "Best regards"
    assert "Apply these changes" in body and 'name="yaml"' in body


def test_apply_imports_what_the_dry_run_showed_audited_as_the_admin(db, admin):
    resp = admin.post("/settings/configuration/import", {"action": "apply", "yaml": UPLOAD})
    assert resp.status_code == 303
    db.session.expire_all()
    fabrikam = db.session.scalar(select(Client).where(Client.name == "Fabrikam"))
    assert fabrikam is not None and fabrikam.msp_id == db.session.scalar(
        select(Client.id).where(Client.name == "Acme MSP"))
    assert db.session.scalar(select(Client).where(Client.name == "Contoso")).waterline == "Kind regards"
    assert db.session.scalar(select(Mailbox).where(Mailbox.address == "help@acme.example")).client_id == fabrikam.id
    created = db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "client",
                                                         AuditEntry.record_id == fabrikam.id))
    assert created.actor_label == "ana@acme.example"
    summary = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "imported"))
    assert summary.changes == {"created": [None, 2], "updated": [None, 1]}
    page = admin.get("/settings/configuration").get_data(as_text=True)
    assert "2 created, 1 updated" in page
    # The same file again: nothing left to do.
    again = upload(admin, UPLOAD).get_data(as_text=True)
    assert "Nothing would change" in again and "Apply these changes" not in again


def test_what_i_download_imports_back_without_changes(admin):
    exported = admin.post("/settings/configuration/export").get_data(as_text=True)
    body = upload(admin, exported).get_data(as_text=True)
    assert "<strong>0</strong> to create, <strong>0</strong> to update" in body


@pytest.mark.parametrize("text, message", [
    ("clients:\n  - name: Acme MSP\n    children: [\n  - x: : y", "not valid YAML: line"),
    ("clients:\n  - name: Acme MSP\n    children:\n      - {name: Contoso, colour: blue}",
     "clients[0].children[0]: Unknown field: colour"),
    ("mailboxes:\n  - {address: x@acme.example, client: Nobody, host: 127.0.0.1}",
     "No single client is called &#39;Nobody&#39; in Acme MSP"),
    ("mailboxes:\n  - {address: x@acme.example, client: Their Customer, host: 127.0.0.1}",
     "No single client is called &#39;Their Customer&#39; in Acme MSP"),
    ("clients:\n  - {name: Theirs MSP, waterline: taken over}", "must be your MSP, Acme MSP"),
    ("users:\n  - {email: tom@acme.example, role: owner, client: Acme MSP}", "users[0].role"),
    ("smtp: {host: relay.example.net}", "only an operator can set it"),
    ("mail_settings: {block_outgoing: true}", "only an operator can set them"),
    ("email_templates:\n  - {client: Their Customer, event: closed, text_source: \"x\\ny\"}",
     "email_templates[0].client: No single client is called &#39;Their Customer&#39; in Acme MSP"),
    ("canned_responses:\n  - {client: Contoso, name: Hi, body: x}", "canned_responses[0]: Unknown field: body"),
    ("frobnicate: 1", "Unknown top-level keys: frobnicate"),
])
def test_bad_files_are_explained_next_to_the_file_field_and_change_nothing(db, admin, text, message):
    entries = count(db, AuditEntry)
    resp = upload(admin, text)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="config-file-error"' in body and message in body, body
    assert count(db, AuditEntry) == entries
    assert db.session.scalar(select(Client).where(Client.name == "Theirs MSP")).waterline in (None, "")


def test_the_yaml_line_is_named(admin):
    body = upload(admin, "clients:\n  - name: Acme MSP\n    children: x: y\n").get_data(as_text=True)
    assert "line 3, column" in body


def test_no_file_and_a_binary_file_are_refused(admin):
    resp = admin.post("/settings/configuration/import", {"action": "preview"}, content_type="multipart/form-data")
    assert resp.status_code == 422 and "Choose a YAML file" in resp.get_data(as_text=True)
    resp = admin.post("/settings/configuration/import",
                      {"action": "preview", "file": (io.BytesIO(b"\xff\xfe\x00bad"), "x.yaml")},
                      content_type="multipart/form-data")
    assert resp.status_code == 422 and "not UTF-8" in resp.get_data(as_text=True)


def test_the_only_msp_of_an_installation_handles_the_gateway_too(app, db, world, make_browser):
    msp = world.msp("Solo MSP")
    world.user(msp, email="sam@solo.example")
    outbound_svc.save_smtp_server({"host": "relay.example.net", "password": "relaypw-secret"},
                                  keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    db.session.commit()
    sam = make_browser()
    sam.sign_in("sam@solo.example")
    data = yaml.safe_load(sam.post("/settings/configuration/export", {"with_secrets": "1"}).get_data(as_text=True))
    assert data["smtp"]["host"] == "relay.example.net" and data["smtp"]["password"] == "relaypw-secret"
    moved = sam.post("/settings/configuration/import",
                     {"action": "apply", "yaml": "smtp: {host: relay2.example.net, security: starttls}"})
    # The saved password is not sent to another server unless it is given again.
    assert moved.status_code == 422 and "type the password again" in moved.get_data(as_text=True)
    resp = sam.post("/settings/configuration/import", {
        "action": "apply", "yaml": "smtp: {host: relay2.example.net, security: starttls, password: relaypw-secret}"})
    assert resp.status_code == 303
    db.session.expire_all()
    assert db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_(None))).host == "relay2.example.net"


@pytest.mark.timeout(60)
def test_aliases_are_refused_within_a_second(db, admin):
    import time

    from tests.services.test_config_io import BOMB

    started = time.monotonic()
    resp = upload(admin, BOMB.replace("Demo MSP", "Acme MSP"))
    assert time.monotonic() - started < 1
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "anchors and aliases" in body, body
    assert count(db, Client) == 4


TEMPLATES_AND_CANNED = textwrap.dedent("""
    email_templates:
      - client: Contoso
        event: closed
        text_source: "Closed: {{ ticket.subject }}\\nThank you."
        shared: false
    canned_responses:
      - {client: Acme MSP, name: Thanks, body_html: "<p>Thanks for waiting.</p>"}
""")


def test_templates_and_canned_responses_are_in_the_download_the_dry_run_and_the_import(db, admin):
    page = admin.get("/settings/configuration").get_data(as_text=True)
    assert "email templates and canned responses" in page and "default gateway and mail settings" not in page
    body = upload(admin, TEMPLATES_AND_CANNED).get_data(as_text=True)
    assert "email template</td><td>Contoso: closed</td><td>would be created" in body
    assert "canned response</td><td>Acme MSP: Thanks</td><td>would be created" in body
    assert count(db, EmailTemplate) == 0 and count(db, CannedResponse) == 0
    resp = admin.post("/settings/configuration/import", {"action": "apply", "yaml": TEMPLATES_AND_CANNED})
    assert resp.status_code == 303
    data = yaml.safe_load(admin.post("/settings/configuration/export").get_data(as_text=True))
    assert data["email_templates"] == [{"client": "Contoso", "event": "closed",
                                        "text_source": "Closed: {{ ticket.subject }}\nThank you.",
                                        "html_source": None, "subject": None, "body": None,
                                        "shared": False}]
    assert data["canned_responses"] == [{"client": "Acme MSP", "name": "Thanks",
                                         "body_html": "<p>Thanks for waiting.</p>", "shared": True}]
    assert "mail_settings" not in data
    again = upload(admin, TEMPLATES_AND_CANNED).get_data(as_text=True)
    assert "Nothing would change" in again


def test_the_only_msp_of_an_installation_exports_and_imports_the_mail_settings(db, world, make_browser):
    from portal.outbound.settings import get_setting

    msp = world.msp("Solo MSP")
    world.user(msp, email="sam@solo.example")
    sam = make_browser()
    sam.sign_in("sam@solo.example")
    assert "default gateway and mail settings" in sam.get("/settings/configuration").get_data(as_text=True)
    data = yaml.safe_load(sam.post("/settings/configuration/export").get_data(as_text=True))
    assert data["mail_settings"] == {"block_outgoing": False, "override_recipient": None,
                                     "auto_mail_limit_per_hour": 10, "customer_notifications": ["closed", "reopened"]}
    text = "mail_settings: {block_outgoing: true, auto_mail_limit_per_hour: 30}"
    body = upload(sam, text).get_data(as_text=True)
    assert "mail settings</td><td>the whole installation</td><td>would be updated" in body
    assert get_setting("block_outgoing") is False
    assert sam.post("/settings/configuration/import", {"action": "apply", "yaml": text}).status_code == 303
    db.session.expire_all()
    assert get_setting("block_outgoing") is True and get_setting("auto_mail_limit_per_hour") == 30
    assert get_setting("customer_notifications") == ["closed", "reopened"]  # left out: kept
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "mail settings"))
    assert entry.actor_label == "sam@solo.example" and entry.changes["auto_mail_limit_per_hour"] == [10, 30]

"""The Mail settings page of an MSP admin (issue #17): their MSP's own values, each showing the
installation's value it inherits and a way back to it; their own gateway with Test connection and
a test email, held to the server-reach rule; another MSP's admin never sees or changes them; a
client's page chooses its customer notifications or inherits them."""

import ipaddress
import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Client, MspSetting
from portal.models import SmtpServer as SmtpServerRow
from portal.outbound import servers
from portal.outbound import settings as svc
from portal.services import commit
from tests.smtp import *  # noqa: F403 - the smtp_server fixtures (and a class SmtpServer, hence SmtpServerRow)

REFUSED = "cannot be used as a server here: it is "


@pytest.fixture
def beta(world, make_browser):
    """A second MSP with its own admin, signed in."""
    other = world.msp("Beta MSP")
    world.user(other, email="bea@beta.example")
    browser = make_browser()
    browser.sign_in("bea@beta.example")
    return other, browser


def own(msp_id):
    return svc.msp_own_settings(msp_id)


def test_an_msp_admin_sets_their_own_values_and_goes_back_to_inheriting(app, msp, admin, beta):
    svc.save_settings({"auto_mail_limit_per_hour": 12}, actor=None)
    commit()
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert "Use the installation's value: 12" in page and "The installation's defaults" not in page
    assert 'id="msp-inherit-auto_mail_limit_per_hour" type="checkbox" name="inherit_auto_mail_limit_per_hour" value="1" checked' in page
    resp = admin.post("/settings/mail/msp", {"auto_mail_limit_per_hour": "4", "inherit_block_outgoing": "1",
                                             "override_recipient": "QA@acme.example", "inherit_customer_notifications": "1"})
    assert resp.status_code == 303
    assert own(msp.id) == {"override_recipient": "qa@acme.example", "auto_mail_limit_per_hour": 4}
    assert svc.get_setting("auto_mail_limit_per_hour") == 12  # the installation's stays
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "mail settings changed"))
    assert entry.record_type == "client" and entry.record_id == msp.id
    assert entry.changes["auto_mail_limit_per_hour"] == ["(inherited)", 4]
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert 'name="auto_mail_limit_per_hour" inputmode="numeric" value="4"' in page and "mail settings changed" in page
    # Every box ticked: back to the installation's values, which the MSP then follows.
    admin.post("/settings/mail/msp", {f"inherit_{k}": "1" for k in svc.SETTING_DEFAULTS})
    assert own(msp.id) == {}
    svc.save_settings({"auto_mail_limit_per_hour": 30}, actor=None)
    assert svc.get_setting("auto_mail_limit_per_hour", msp.id) == 30


def test_wrong_values_are_named_by_field_and_change_nothing(msp, admin):
    resp = admin.post("/settings/mail/msp", {"auto_mail_limit_per_hour": "0", "override_recipient": "qa@",
                                             "host": "bad host!"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "1 to 1000" in body and 'id="msp-override_recipient-error"' in body
    assert db.session.scalars(select(MspSetting)).all() == []
    resp = admin.post("/settings/mail/msp", {f"inherit_{k}": "1" for k in svc.SETTING_DEFAULTS} | {"host": "bad host!"})
    assert resp.status_code == 422 and 'id="msp-host-error"' in resp.get_data(as_text=True)
    assert db.session.scalars(select(SmtpServerRow)).all() == []


def test_another_msps_admin_neither_sees_nor_changes_them(app, msp, admin, beta, world, make_browser):
    other, bea = beta
    admin.post("/settings/mail/msp", {"auto_mail_limit_per_hour": "4", "host": "smtp.acme.example", "security": "starttls",
                                      "username": "acme-relay", "password": "acme-relay-pw"})
    assert own(msp.id)["auto_mail_limit_per_hour"] == 4
    page = bea.get("/settings/mail").get_data(as_text=True)
    assert "smtp.acme.example" not in page and "acme-relay" not in page and "Beta MSP" in page
    assert bea.post("/settings/mail/msp", {"auto_mail_limit_per_hour": "9"}).status_code == 303
    assert own(msp.id)["auto_mail_limit_per_hour"] == 4 and own(other.id)["auto_mail_limit_per_hour"] == 9
    # Bea's test, connection check and removal reach only Beta's gateway (it has none).
    assert "no gateway of your MSP yet" in bea.post("/settings/mail/msp/check", htmx=True).get_data(as_text=True)
    bea.post("/settings/mail/msp/gateway/remove", htmx=True)
    assert servers.msp_gateway(msp.id).host == "smtp.acme.example"
    # The installation's settings are the operators' (two MSPs), and a client of Acme is 404 to Bea.
    assert bea.post("/settings/mail", {"auto_mail_limit_per_hour": "5"}).status_code == 403
    contoso = world.client(msp, "Contoso")
    assert bea.post(f"/clients/{contoso.id}/notifications", {"inherit": "1"}).status_code == 404
    world.user(msp, email="tom@acme.example", role="technician")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.post("/settings/mail/msp", {"auto_mail_limit_per_hour": "9"}).status_code == 403
    assert tom.post(f"/clients/{contoso.id}/notifications", {"inherit": "1"}).status_code == 403
    assert own(msp.id)["auto_mail_limit_per_hour"] == 4


def test_the_msp_gateway_is_tested_within_the_server_reach_rule(app, msp, admin, beta, smtp_server, redis):
    resp = admin.post("/settings/mail/msp", {f"inherit_{k}": "1" for k in svc.SETTING_DEFAULTS} | {
        "host": "127.0.0.1", "port": str(smtp_server.port), "security": "none", "from": "gw@acme.example"})
    assert resp.status_code == 303
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert "Test connection" in page and "Send test email" in page
    # Two MSPs: a host an MSP admin typed may not be this machine.
    refused = admin.post("/settings/mail/msp/check", htmx=True).get_data(as_text=True)
    assert f"Not connected: 127.0.0.1 {REFUSED}an address of this machine itself" in refused
    sent = admin.post("/settings/mail/msp/test", {"recipient": "qa@acme.example"}, htmx=True).get_data(as_text=True)
    assert f"Not sent: 127.0.0.1 {REFUSED}" in sent and smtp_server.messages == []
    # The operator allows the network: the same checks pass, and the test mail says whose gateway sent it.
    app.config["TIDEMARK_ALLOWED_SERVER_NETWORKS"] = (ipaddress.ip_network("127.0.0.0/8"),)
    ok = admin.post("/settings/mail/msp/check", htmx=True).get_data(as_text=True)
    assert f"Connected: connected to 127.0.0.1:{smtp_server.port}" in ok
    sent = admin.post("/settings/mail/msp/test", {"recipient": "qa@acme.example"}, htmx=True).get_data(as_text=True)
    assert "Sent to qa@acme.example through 127.0.0.1 (your MSP&#39;s gateway)." in sent
    # A click before htmx had taken the form (a plain POST) gets the whole page, the answer in its place.
    plain = admin.post("/settings/mail/msp/check").get_data(as_text=True)
    assert "<html" in plain and re.search(r'<div id="msp-check-result" aria-live="polite"><p class="ok-text" '
                                          r'role="status">Connected: connected to 127\.0\.0\.1', plain)
    plain = admin.post("/settings/mail/msp/test", {"recipient": "qa@acme.example"}).get_data(as_text=True)
    assert "<html" in plain and re.search(r'<div id="msp-send-result" aria-live="polite"><p class="ok-text" '
                                          r'role="status">Sent to qa@acme\.example', plain)
    got = smtp_server.last().message
    assert got["From"] == "gw@acme.example" and got["Subject"] == "Tidemark test email for your MSP's gateway"
    assert db.session.scalar(select(SmtpServerRow).where(SmtpServerRow.msp_id == msp.id)).last_test_ok is True
    actions = set(db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_id == msp.id)))
    assert {"gateway set", "gateway tested", "test email sent"} <= actions
    # Removed (it asks first): the MSP's mail goes through the installation's gateway again.
    asked = admin.post("/settings/mail/msp/gateway/remove", confirmed=False)  # a plain submit: the page asks
    assert asked.status_code == 200 and "Remove the gateway" in asked.get_data(as_text=True)
    assert servers.msp_gateway(msp.id) is not None
    admin.post("/settings/mail/msp/gateway/remove", htmx=True)
    assert servers.msp_gateway(msp.id) is None
    assert "gateway removed" in admin.get("/settings/mail").get_data(as_text=True)


def test_a_client_chooses_its_customer_notifications_or_inherits_them(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    berlin = world.client(contoso, "Contoso Berlin")
    page = admin.get(f"/clients/{berlin.id}").get_data(as_text=True)
    assert "their ticket is closed; their ticket is reopened" in page and "inherited from the" in page
    resp = admin.post(f"/clients/{contoso.id}/notifications", {"customer_notifications": ["owner_changed"]})
    assert resp.status_code == 303
    assert db.session.get(Client, contoso.id).customer_notifications == ["owner_changed"]
    page = admin.get(f"/clients/{berlin.id}").get_data(as_text=True)
    assert "a technician takes their ticket" in page and f'inherited from <a href="/clients/{contoso.id}">Contoso</a>' in page
    assert "set here" in admin.get(f"/clients/{contoso.id}").get_data(as_text=True)
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "customer notifications changed"))
    assert entry.record_id == contoso.id and entry.changes["customer notifications"] == ["(inherited)", ["owner_changed"]]
    bad = admin.post(f"/clients/{contoso.id}/notifications", {"customer_notifications": ["birthday"]})
    assert bad.status_code == 422 and "Unknown: birthday." in bad.get_data(as_text=True)
    admin.post(f"/clients/{contoso.id}/notifications", {"inherit": "1", "customer_notifications": ["closed"]})
    db.session.expire_all()
    assert db.session.get(Client, contoso.id).customer_notifications is None

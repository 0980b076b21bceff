from sqlalchemy import select

from portal.extensions import db
from portal.models import SmtpServer
from portal.outbound import settings as svc
from portal.transport.base import UNTRUSTED_HINT, VERIFY_TLS_LABEL


def test_the_gateway_and_switches_are_saved_with_the_password_encrypted(app, admin):
    resp = admin.post("/settings/mail", {"host": "relay.example.net", "port": "587", "security": "starttls",
                                         "username": "relay", "password": "relay-secret", "from": "noreply@acme.example",
                                         "auto_mail_limit_per_hour": "5", "block_outgoing": "1",
                                         "override_recipient": "QA@acme.example"})
    assert resp.status_code == 303
    server = db.session.scalar(select(SmtpServer))
    assert server.host == "relay.example.net" and b"relay-secret" not in server.password_encrypted
    assert svc.get_setting("block_outgoing") is True and svc.get_setting("override_recipient") == "qa@acme.example"
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert "relay-secret" not in page and "stored; leave empty to keep it" in page
    # Saving again without a password keeps the stored one.
    admin.post("/settings/mail", {"host": "relay.example.net", "port": "587", "security": "starttls",
                                  "auto_mail_limit_per_hour": "5"})
    db.session.expire_all()
    assert db.session.scalar(select(SmtpServer)).password_encrypted is not None


def test_wrong_values_are_named(admin):
    resp = admin.post("/settings/mail", {"host": "bad host!", "port": "99999", "auto_mail_limit_per_hour": "0",
                                         "override_recipient": "nope"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert "not a host name" in body and "1 to 65535" in body and "1 to 1000" in body and "nope" in body


def test_only_operators_change_installation_settings_when_several_msps_share_it(app, world, msp, admin, make_browser):
    world.user(msp, email="tom@acme.example", role="technician")
    assert "The installation's defaults" in admin.get("/settings/mail").get_data(as_text=True)
    assert 'href="/settings/mail"' in admin.get("/").get_data(as_text=True)
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    # Two MSPs now: the admin keeps the page for the MSP's own values; the installation's are the operators'.
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert "The installation's defaults" not in page and 'action="/settings/mail/msp"' in page
    assert 'href="/settings/mail"' in admin.get("/").get_data(as_text=True)
    assert admin.post("/settings/mail", {"auto_mail_limit_per_hour": "5"}).status_code == 403
    assert svc.get_setting("auto_mail_limit_per_hour") == svc.DEFAULT_AUTO_LIMIT_PER_HOUR
    app.config["TIDEMARK_OPERATORS"] = ["ana@acme.example"]
    assert "The installation's defaults" in admin.get("/settings/mail").get_data(as_text=True)
    assert admin.post("/settings/mail", {"auto_mail_limit_per_hour": "5"}).status_code == 303
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get("/settings/mail").status_code == 403
    assert 'href="/settings/mail"' not in tech.get("/").get_data(as_text=True)


def test_the_gateway_has_the_tls_check_box_the_self_signed_hint_names(app, admin):
    """An untrusted certificate's error tells the reader to untick a box: the gateway's page has it."""
    page = admin.get("/settings/mail").get_data(as_text=True)
    assert f'<label for="verify_tls">{VERIFY_TLS_LABEL}</label>' in page.replace("&#39;", "'")
    assert VERIFY_TLS_LABEL in UNTRUSTED_HINT
    assert 'id="verify_tls" type="checkbox" name="verify_tls" value="1" checked' in page  # on by default
    fields = {"host": "relay.example.net", "port": "587", "security": "starttls", "auto_mail_limit_per_hour": "5"}
    assert admin.post("/settings/mail", fields).status_code == 303  # unticked: sent as nothing
    assert db.session.scalar(select(SmtpServer)).verify_tls is False
    assert 'name="verify_tls" value="1" >' in admin.get("/settings/mail").get_data(as_text=True)
    admin.post("/settings/mail", {**fields, "verify_tls": "1"})
    db.session.expire_all()
    assert db.session.scalar(select(SmtpServer)).verify_tls is True

from sqlalchemy import select

from portal.extensions import db
from portal.models import SmtpServer
from portal.outbound import settings as svc


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
    assert admin.get("/settings/mail").status_code == 200
    assert 'href="/settings/mail"' in admin.get("/").get_data(as_text=True)
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    assert admin.get("/settings/mail").status_code == 403  # two MSPs now: operators only
    assert 'href="/settings/mail"' not in admin.get("/").get_data(as_text=True)  # and the nav says nothing of it
    app.config["TIDEMARK_OPERATORS"] = ["ana@acme.example"]
    assert admin.get("/settings/mail").status_code == 200
    assert 'href="/settings/mail"' in admin.get("/").get_data(as_text=True)
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get("/settings/mail").status_code == 403

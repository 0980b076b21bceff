"""After a validation error the password fields are empty again (no password is kept between
requests): each one that was typed says plainly that it must be typed again."""

import re

from portal.display import RETYPE_PASSWORD
from tests.conftest import PASSWORD


def _retype_notes(body: str) -> list[str]:
    return re.findall(r'<p class="help retype" id="([\w-]+)-retype">', body)


def test_a_password_change_with_an_error_asks_for_every_typed_password_again(world, browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="tom@acme.example", role="technician")
    browser.sign_in("tom@acme.example")
    resp = browser.post("/account/password", {"current": PASSWORD, "password": "another long password",
                                              "confirmation": "something else"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and RETYPE_PASSWORD in body
    assert sorted(_retype_notes(body)) == ["confirmation", "current", "password"]
    assert re.search(r'aria-describedby="[^"]*password-retype"[^>]*id="password"', body)  # read out with the field
    assert "another long password" not in body  # not kept
    # A field left empty gets its own error, not the note.
    resp = browser.post("/account/password", {"current": PASSWORD, "password": "", "confirmation": ""})
    assert _retype_notes(resp.get_data(as_text=True)) == ["current"]
    # A page that did not come back with an error says nothing.
    assert _retype_notes(browser.get("/account").get_data(as_text=True)) == []


def test_the_gateway_password_is_asked_for_again_after_an_error(admin):
    resp = admin.post("/settings/mail", {"host": "relay.example.net", "port": "99999", "password": "relay-secret",
                                         "auto_mail_limit_per_hour": "5"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and _retype_notes(body) == ["password"] and "relay-secret" not in body
    resp = admin.post("/settings/mail", {"host": "relay.example.net", "port": "99999", "auto_mail_limit_per_hour": "5"})
    assert _retype_notes(resp.get_data(as_text=True)) == []

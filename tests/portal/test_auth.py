from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.models import SignInFailure
from portal.models.base import utcnow
from portal.services.users import BAD_CREDENTIALS
from tests.conftest import PASSWORD


@pytest.fixture
def admin(world):
    return world.user(world.msp(), email="ana@acme.example")


def test_sign_in_and_out(browser, admin):
    resp = browser.sign_in("ANA@acme.example ")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    page = browser.get("/")
    assert page.status_code == 200 and "Acme MSP" in page.get_data(as_text=True)
    assert browser.sign_out().status_code == 302
    assert browser.get("/").status_code == 302  # back to the sign-in page


@pytest.mark.parametrize("email, password", [("ana@acme.example", "wrong password"), ("nobody@acme.example", PASSWORD)])
def test_bad_credentials_get_one_plain_message(browser, admin, email, password):
    resp = browser.sign_in(email, password)
    assert resp.status_code == 401
    assert BAD_CREDENTIALS in resp.get_data(as_text=True)


def test_empty_form_says_which_field_is_missing(browser, admin):
    browser.get("/sign-in")
    resp = browser.post("/sign-in", {"email": "", "password": ""})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "Enter your email address." in body and "Enter your password." in body


def test_account_is_throttled_after_repeated_failures_even_with_the_right_password(app, browser, admin):
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        assert browser.sign_in("ana@acme.example", "nope nope nope").status_code == 401
    resp = browser.sign_in("ana@acme.example", PASSWORD)
    assert resp.status_code == 401
    assert "Too many failed sign-ins for this account" in resp.get_data(as_text=True)


def test_throttling_ends_when_the_window_has_passed(app, db, browser, admin):
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"]):
        browser.sign_in("ana@acme.example", "nope nope nope")
    for failure in db.session.scalars(select(SignInFailure)):
        failure.at = utcnow() - app.config["LOGIN_WINDOW"] - timedelta(seconds=1)
    db.session.commit()
    assert browser.sign_in("ana@acme.example").status_code == 302
    # A success forgets the account's failures.
    assert db.session.scalar(select(func.count()).select_from(SignInFailure)) == 0


def test_one_address_trying_many_accounts_is_throttled(app, browser, admin):
    app.config["LOGIN_MAX_FAILURES_PER_IP"] = 3
    for i in range(3):
        browser.sign_in(f"guess{i}@acme.example", "whatever123")
    resp = browser.sign_in("ana@acme.example")
    assert resp.status_code == 401
    assert "Too many failed sign-ins from your network" in resp.get_data(as_text=True)


def test_disabled_user_is_told_so_and_kept_out(db, browser, admin):
    admin.disabled = True
    db.session.commit()
    resp = browser.sign_in("ana@acme.example")
    assert resp.status_code == 401 and "disabled" in resp.get_data(as_text=True)


def test_disabling_a_signed_in_user_ends_their_session(db, browser, admin):
    browser.sign_in("ana@acme.example")
    admin.disabled = True
    db.session.commit()
    assert browser.get("/clients").status_code == 302


def test_password_change_signs_out_other_sessions(db, browser, admin):
    browser.sign_in("ana@acme.example")
    admin.set_password("a brand new password")
    db.session.commit()
    assert browser.get("/clients").status_code == 302


def test_next_goes_only_to_this_site(browser, admin):
    browser.get("/sign-in")
    resp = browser.post("/sign-in?next=https://evil.example/x", {"email": "ana@acme.example", "password": PASSWORD})
    assert resp.headers["Location"] == "/"
    browser.sign_out()
    browser.get("/sign-in")
    resp = browser.post("/sign-in?next=/clients", {"email": "ana@acme.example", "password": PASSWORD})
    assert resp.headers["Location"] == "/clients"


def test_forms_without_csrf_token_are_refused(browser, admin):
    resp = browser.post("/sign-in", {"email": "ana@acme.example", "password": PASSWORD}, token=False)
    assert resp.status_code == 302  # sent back with a message, not signed in
    assert browser.get("/clients").status_code == 302


def test_htmx_request_with_a_stale_token_asks_for_a_refresh(browser, admin):
    browser.sign_in("ana@acme.example")
    resp = browser.post("/clients/new", {"name": "X", "csrf_token": "stale"}, htmx=True)
    assert resp.status_code == 400 and resp.headers["HX-Refresh"] == "true"


def test_htmx_request_when_signed_out_is_sent_to_sign_in(browser):
    resp = browser.hx_get("/clients")
    assert resp.headers["HX-Redirect"] == "/sign-in"


def test_session_cookie_is_http_only_and_same_site(browser, admin):
    resp = browser.sign_in("ana@acme.example")
    cookie = next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith("tidemark_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_every_page_carries_security_headers(browser):
    resp = browser.get("/sign-in")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "HX-Request" in resp.headers["Vary"]

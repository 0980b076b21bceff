"""Sessions end on the server: sign-out, a new password, a disabled account and "sign out
everywhere" refuse every cookie issued before, copies included."""

import pytest
from sqlalchemy import select

from portal.models import AuditEntry, User
from tests.conftest import PASSWORD

SESSION = "tidemark_session"
REMEMBER = "remember_token"
NEW_PASSWORD = "another long password"


@pytest.fixture
def ana(world):
    msp = world.msp("Acme MSP")
    world.user(msp, email="boss@acme.example")  # an admin who can disable ana
    return world.user(msp, email="ana@acme.example", role="technician")


def sign_in_remembered(browser, email="ana@acme.example"):
    browser.get("/sign-in")
    resp = browser.post("/sign-in", {"email": email, "password": PASSWORD, "remember": "y"})
    assert resp.status_code == 302
    browser.get("/")
    return browser


def cookie(browser, name):
    found = browser.client.get_cookie(name)
    return found.value if found is not None else None


def with_cookie(make_browser, name, value):
    """Another browser that holds only a copy of one cookie."""
    other = make_browser()
    other.client.set_cookie(name, value)
    return other


def signed_in(browser) -> bool:
    return browser.get("/clients").status_code == 200


# --- sign-out and "keep me signed in" --------------------------------------------------------------


def test_sign_out_deletes_the_remember_cookie_and_stays_signed_out(browser, ana):
    sign_in_remembered(browser)
    assert cookie(browser, REMEMBER)
    resp = browser.sign_out()
    assert resp.headers["Location"] == "/sign-in"
    assert cookie(browser, REMEMBER) is None
    assert browser.get("/sign-in").status_code == 200  # the form, not a bounce to the dashboard
    assert not signed_in(browser)


def test_cookies_copied_before_sign_out_are_refused_after_it(browser, make_browser, ana):
    sign_in_remembered(browser)
    session_copy, remember_copy = cookie(browser, SESSION), cookie(browser, REMEMBER)
    assert signed_in(with_cookie(make_browser, SESSION, session_copy))
    assert signed_in(with_cookie(make_browser, REMEMBER, remember_copy))
    browser.sign_out()
    assert not signed_in(with_cookie(make_browser, SESSION, session_copy))
    assert not signed_in(with_cookie(make_browser, REMEMBER, remember_copy))


def test_after_sign_out_the_same_password_signs_in_again(browser, ana):
    sign_in_remembered(browser)
    browser.sign_out()
    sign_in_remembered(browser)
    assert signed_in(browser)


# --- the same for a new password, a disabled account, "sign out everywhere" -----------------------


def change_password(other):
    resp = other.post("/account/password", {"current": PASSWORD, "password": NEW_PASSWORD,
                                            "confirmation": NEW_PASSWORD})
    assert resp.status_code == 303


def disable(make_browser, db):
    boss = make_browser()
    boss.sign_in("boss@acme.example")
    ana_id = db.session.scalar(select(User.id).where(User.email == "ana@acme.example"))
    boss.get(f"/users/{ana_id}")
    assert boss.post(f"/users/{ana_id}/disable").status_code == 303


def sign_out_everywhere(other):
    other.get("/account")
    resp = other.post("/account/sign-out-everywhere")
    assert resp.status_code == 303 and resp.headers["Location"] == "/sign-in"


@pytest.mark.parametrize("end", ["password", "disable", "everywhere"])
def test_cookies_copied_before_are_refused_after(end, db, browser, make_browser, ana):
    sign_in_remembered(browser)
    session_copy, remember_copy = cookie(browser, SESSION), cookie(browser, REMEMBER)
    elsewhere = make_browser()
    elsewhere.sign_in("ana@acme.example")
    if end == "password":
        change_password(elsewhere)
    elif end == "disable":
        disable(make_browser, db)
    else:
        sign_out_everywhere(elsewhere)
    assert not signed_in(browser)
    assert not signed_in(with_cookie(make_browser, SESSION, session_copy))
    assert not signed_in(with_cookie(make_browser, REMEMBER, remember_copy))


def test_sign_out_everywhere_is_offered_confirmed_and_audited(db, browser, ana):
    browser.sign_in("ana@acme.example")
    body = browser.get("/account").get_data(as_text=True)
    assert 'action="/account/sign-out-everywhere"' in body and "hx-confirm=" in body
    sign_out_everywhere(browser)
    assert not signed_in(browser)
    page = browser.get("/sign-in").get_data(as_text=True)
    assert "signed out on every device" in page
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "signed out everywhere"))
    assert entry is not None and entry.actor_label == "ana@acme.example"


def test_sign_out_everywhere_needs_the_csrf_token(browser, ana):
    browser.sign_in("ana@acme.example")
    resp = browser.post("/account/sign-out-everywhere", token=False)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert signed_in(browser)

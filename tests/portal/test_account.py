"""My settings: name, time zone (used for every time shown to me) and password."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from portal.models import AuditEntry, User
from portal.services import commit
from tests.conftest import PASSWORD
from tests.mailfactory import email

NEW_PASSWORD = "another long password"


@pytest.fixture
def tom(world, browser):
    msp = world.msp("Acme MSP", timezone="Europe/Berlin")
    world.user(msp, email="tom@acme.example", role="technician")
    browser.sign_in("tom@acme.example")
    return browser


def me(db):
    db.session.expire_all()
    return db.session.scalar(select(User).where(User.email == "tom@acme.example"))


def test_every_user_reaches_my_settings_with_the_zone_list(tom):
    body = tom.get("/account").get_data(as_text=True)
    assert "My settings" in body and "My MSP&#39;s time zone (Europe/Berlin)" in body
    assert '<option value="Pacific/Auckland">' in body


def test_name_and_time_zone_are_saved_and_audited(db, tom):
    resp = tom.post("/account", {"name": "  Tom   Tech ", "timezone": "Asia/Tokyo"})
    assert resp.status_code == 303
    user = me(db)
    assert user.name == "Tom Tech" and user.timezone == "Asia/Tokyo"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "updated own settings"))
    assert entry.changes["timezone"] == [None, "Asia/Tokyo"] and entry.actor_label == "tom@acme.example"
    assert "Tom Tech" in tom.get("/account").get_data(as_text=True)
    # Back to the MSP's zone.
    tom.post("/account", {"name": "Tom Tech", "timezone": ""})
    assert me(db).timezone is None


def test_an_unknown_time_zone_is_named_next_to_the_field(db, tom):
    resp = tom.post("/account", {"name": "Tom", "timezone": "Mars/Olympus_Mons"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="timezone-error"' in body and "Mars/Olympus_Mons is not a time zone" in body
    assert me(db).timezone is None and me(db).name == ""


def test_times_on_the_tickets_list_show_in_my_zone(db, world, tom):
    msp = db.session.scalar(select(User)).msp
    box = world.mailbox(msp, acknowledge=False)
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire")).ticket
    ticket.updated_at = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    commit()
    assert "2026-01-15 13:00 CET" in tom.get("/tickets").get_data(as_text=True)  # the MSP's zone
    tom.post("/account", {"name": "", "timezone": "Asia/Tokyo"})
    page = tom.get("/tickets").get_data(as_text=True)
    assert "2026-01-15 21:00 JST" in page and "13:00 CET" not in page


def test_changing_the_password_ends_other_sessions_but_keeps_this_one(db, tom, make_browser):
    laptop = make_browser()
    laptop.sign_in("tom@acme.example")
    assert laptop.get("/account").status_code == 200
    resp = tom.post("/account/password", {"current": PASSWORD, "password": NEW_PASSWORD, "confirmation": NEW_PASSWORD})
    assert resp.status_code == 303
    page = tom.get("/account")  # still signed in here
    assert page.status_code == 200 and "Your password is changed" in page.get_data(as_text=True)
    assert laptop.get("/account").status_code == 302  # signed out there
    assert me(db).check_password(NEW_PASSWORD)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "changed own password")) is not None


@pytest.mark.parametrize("data, field, message", [
    ({"current": "wrong password!", "password": NEW_PASSWORD, "confirmation": NEW_PASSWORD}, "current",
     "not your current password"),
    ({"current": PASSWORD, "password": "short", "confirmation": "short"}, "password", "at least 10 characters"),
    ({"current": PASSWORD, "password": NEW_PASSWORD, "confirmation": "something else"}, "confirmation",
     "not the same"),
    ({"current": PASSWORD, "password": PASSWORD, "confirmation": PASSWORD}, "password", "same as the current"),
])
def test_password_errors_are_named_and_change_nothing(db, tom, data, field, message):
    resp = tom.post("/account/password", data)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and f'id="{field}-error"' in body and message in body
    assert me(db).check_password(PASSWORD)
    assert tom.get("/account").status_code == 200


def test_my_settings_needs_sign_in_and_csrf(app, make_browser, tom):
    anonymous = make_browser()
    assert anonymous.get("/account").status_code == 302
    resp = tom.post("/account", {"name": "No token"}, token=False)
    assert resp.status_code == 302
    assert me(app.extensions["sqlalchemy"]).name == ""


def test_guessing_the_current_password_is_throttled_like_sign_in(app, db, tom):
    app.config["LOGIN_MAX_FAILURES_PER_ACCOUNT"] = 3
    wrong = {"current": "wrong password!", "password": NEW_PASSWORD, "confirmation": NEW_PASSWORD}
    for _ in range(3):
        assert "not your current password" in tom.post("/account/password", wrong).get_data(as_text=True)
    right = {"current": PASSWORD, "password": NEW_PASSWORD, "confirmation": NEW_PASSWORD}
    resp = tom.post("/account/password", right)
    assert resp.status_code == 422 and "Too many wrong passwords" in resp.get_data(as_text=True)
    assert me(db).check_password(PASSWORD)  # even the right one waits out the window

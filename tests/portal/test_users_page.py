"""The users page: invitations with signed links, roles, disabling, and the last-admin rule."""

import re

import pytest
from sqlalchemy import select

from portal.models import AuditEntry, User
from portal.services import users as svc
from tests.conftest import PASSWORD

LINK = re.compile(r'value="(http://[^"]+/invitation/[^"]+)"')
NEW_PASSWORD = "a brand new password"


@pytest.fixture
def team(world):
    msp = world.msp("Acme MSP")
    admin = world.user(msp, email="ana@acme.example")
    tech = world.user(msp, email="tom@acme.example", role="technician")
    return msp, admin, tech


@pytest.fixture
def admin(browser, team):
    browser.sign_in("ana@acme.example")
    return browser


def invite(admin, email="new@acme.example", role="technician", name="Nia New"):
    resp = admin.post("/users/invite", {"email": email, "name": name, "role": role}, htmx=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return LINK.search(resp.get_data(as_text=True)).group(1)


def path_of(link: str) -> str:
    return link.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


def audit_actions(db, user_id):
    return [e.action for e in db.session.scalars(
        select(AuditEntry).where(AuditEntry.record_type == "user", AuditEntry.record_id == user_id)
        .order_by(AuditEntry.id))]


def test_the_list_shows_role_state_and_last_sign_in_and_filters(db, admin, team):
    body = admin.get("/users").get_data(as_text=True)
    assert "ana@acme.example" in body and "tom@acme.example" in body and "technician" in body
    assert "never" in body  # tom has not signed in
    assert re.search(r"ana@acme\.example.*?<time", body, re.S)  # ana just did
    fragment = admin.hx_get("/users?q=TOM").get_data(as_text=True)
    assert "<html" not in fragment and "tom@acme.example" in fragment and "ana@acme.example" not in fragment
    assert "No user matches" in admin.hx_get("/users?q=zzz").get_data(as_text=True)


def test_the_list_is_paginated(world, admin, team):
    for i in range(svc.USERS_PAGE + 1):
        world.user(team[0], email=f"user{i:02d}@acme.example", role="technician")
    first = admin.get("/users").get_data(as_text=True)
    assert "Page 1 of 2" in first and "/users?page=2" in first
    second = admin.get("/users?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in second and second.count('href="/users/') < first.count('href="/users/')


def test_technicians_get_403_and_other_msps_users_404(world, make_browser, team):
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get("/users").status_code == 403
    assert tech.get("/users/invite").status_code == 403
    assert tech.post(f"/users/{team[1].id}/disable").status_code == 403
    other = world.user(world.msp("Other MSP"), email="oscar@other.example")
    ana = make_browser()
    ana.sign_in("ana@acme.example")
    for url in (f"/users/{other.id}", f"/users/{other.id}/history"):
        assert ana.get(url).status_code == 404
    for url in (f"/users/{other.id}/disable", f"/users/{other.id}/role", f"/users/{other.id}/invitation"):
        assert ana.post(url, {"role": "technician"}).status_code == 404


def test_invite_says_which_field_is_wrong(db, admin, team):
    resp = admin.post("/users/invite", {"email": "TOM@acme.example", "name": "", "role": "technician"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "<html" not in body
    assert 'id="email-error"' in body and "already exists" in body
    resp = admin.post("/users/invite", {"email": "not an address", "role": "owner"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="role-error"' in body
    assert db.session.scalar(select(User).where(User.email == "not an address")) is None


def test_an_invited_user_sets_a_password_through_the_link_and_is_signed_in(db, admin, make_browser):
    link = invite(admin, "Nia@Acme.example", role="admin")
    user = db.session.scalar(select(User).where(User.email == "nia@acme.example"))
    assert user.role == "admin" and svc.invitation_pending(user)
    assert "invited" in audit_actions(db, user.id)
    # The unusable password cannot be guessed at the sign-in page.
    guest = make_browser()
    assert guest.sign_in("nia@acme.example", "").status_code != 302

    page = guest.get(path_of(link))
    assert page.status_code == 200 and "Set your password" in page.get_data(as_text=True)
    short = guest.post(path_of(link), {"password": "short", "confirmation": "short"})
    assert short.status_code == 422 and "at least 10 characters" in short.get_data(as_text=True)
    mismatch = guest.post(path_of(link), {"password": NEW_PASSWORD, "confirmation": NEW_PASSWORD + "!"})
    assert mismatch.status_code == 422 and 'id="confirmation-error"' in mismatch.get_data(as_text=True)

    done = guest.post(path_of(link), {"password": NEW_PASSWORD, "confirmation": NEW_PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/"
    assert "Your password is set" in guest.get("/").get_data(as_text=True)
    db.session.expire_all()
    assert user.check_password(NEW_PASSWORD) and not svc.invitation_pending(user) and user.last_sign_in_at
    # Once used, the link is dead, and the password works at the sign-in page.
    again = make_browser().get(path_of(link))
    assert again.status_code == 400 and "has been used" in again.get_data(as_text=True)
    assert make_browser().sign_in("nia@acme.example", NEW_PASSWORD).status_code == 302


def test_links_expire_after_seven_days_and_forgeries_fail(app, db, admin, make_browser):
    link = invite(admin)
    user = db.session.scalar(select(User).where(User.email == "new@acme.example"))
    token = path_of(link).rsplit("/", 1)[1]
    with pytest.raises(svc.InvitationError, match="older than 7 days"):
        svc.user_for_invitation(token, app.config["SECRET_KEY"], max_age=-1)
    assert svc.user_for_invitation(token, app.config["SECRET_KEY"]).id == user.id
    forged = make_browser().get(f"/invitation/{token[:-3]}abc")
    assert forged.status_code == 400 and "not valid" in forged.get_data(as_text=True)
    other_key = svc.invitation_token(user, "another-secret")
    assert make_browser().get(f"/invitation/{other_key}").status_code == 400


def test_sending_again_replaces_the_link(db, admin):
    old = invite(admin)
    user = db.session.scalar(select(User).where(User.email == "new@acme.example"))
    resp = admin.post(f"/users/{user.id}/invitation", htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<html" not in body
    new = LINK.search(body).group(1)
    assert new != old
    assert "replaced by a newer one" in admin.client.get(path_of(old)).get_data(as_text=True)
    assert admin.client.get(path_of(new)).status_code == 200
    assert "invitation sent again" in audit_actions(db, user.id)
    # Someone with a password has no invitation to send.
    ana = db.session.scalar(select(User).where(User.email == "ana@acme.example"))
    assert admin.post(f"/users/{ana.id}/invitation", htmx=True).status_code == 422


def test_change_role_is_audited_and_shown(db, admin, team):
    tech = team[2]
    resp = admin.post(f"/users/{tech.id}/role", {"role": "admin"})
    assert resp.status_code == 303
    db.session.expire_all()
    assert tech.role == "admin"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.record_id == tech.id,
                                                       AuditEntry.action == "changed role"))
    assert entry.changes == {"role": ["technician", "admin"]} and entry.actor_label == "ana@acme.example"
    page = admin.get(f"/users/{tech.id}").get_data(as_text=True)
    assert "is now an admin" in page and "changed role" in page


def test_an_admin_cannot_demote_or_disable_themself(db, admin, team):
    ana = team[1]
    resp = admin.post(f"/users/{ana.id}/role", {"role": "technician"})
    assert resp.status_code == 422
    assert 'id="role-error"' in resp.get_data(as_text=True) and "your own admin role" in resp.get_data(as_text=True)
    resp = admin.post(f"/users/{ana.id}/disable")
    assert resp.status_code == 422 and "cannot disable your own account" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert ana.role == "admin" and not ana.disabled


def test_the_last_active_admin_cannot_be_removed(db, world, team):
    msp, ana, tech = team
    # From the command line (no actor) the rule holds too.
    with pytest.raises(svc.ValidationError, match="last active admin"):
        svc.change_role(ana, "technician", None)
    with pytest.raises(svc.ValidationError, match="last active admin"):
        svc.set_user_disabled(ana, True, tech)
    db.session.rollback()
    # An invited admin who never set a password does not count as active.
    svc.invite_user(msp, "pending@acme.example", "", "admin", ana)
    with pytest.raises(svc.ValidationError, match="last active admin"):
        svc.change_role(ana, "technician", None)
    db.session.rollback()
    world.user(msp, email="bea@acme.example")
    assert svc.change_role(ana, "technician", None) is True


def test_disabling_ends_their_sessions_and_enabling_lets_them_back(db, admin, team, make_browser):
    tech = team[2]
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert tom.get("/tickets").status_code == 200
    resp = admin.post(f"/users/{tech.id}/disable")
    assert resp.status_code == 303
    assert tom.get("/tickets").status_code == 302  # signed out at once
    assert "disabled" in tom.sign_in("tom@acme.example").get_data(as_text=True)
    page = admin.get("/users").get_data(as_text=True)
    assert "Disabled" in page
    assert admin.post(f"/users/{tech.id}/enable").status_code == 303
    assert tom.sign_in("tom@acme.example", PASSWORD).status_code == 302
    assert audit_actions(db, tech.id)[-2:] == ["disabled", "enabled"]


def test_disable_asks_for_confirmation(admin, team):
    body = admin.get(f"/users/{team[2].id}").get_data(as_text=True)
    assert re.search(r'action="/users/\d+/disable"[^>]*hx-confirm="Disable tom@acme\.example\?', body)

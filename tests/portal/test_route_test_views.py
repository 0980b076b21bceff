"""Routes in test on the pages: the route form's checkbox, the label and count on the mailbox
page, Reset count and Make live, and the routing check."""

import re

import pytest
from sqlalchemy import select, update

from portal.extensions import db
from portal.models import AuditEntry, Route
from portal.services import commit
from tests.portal.test_route_forms import route_form


@pytest.fixture
def box(world, msp):
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="desk@acme.example", aliases=["vip@acme.example"], routes=[
        {"name": "Contoso VIP", "client": contoso, "recipients": ["vip@acme.example"], "test_mode": True},
        {"name": "Everything else", "client": msp, "fallback": True},
    ])
    db.session.execute(update(Route).where(Route.name == "Contoso VIP").values(test_hits=5))
    commit()
    return box


def trial() -> Route:
    db.session.expire_all()
    return db.session.scalar(select(Route).where(Route.name == "Contoso VIP"))


def history(box) -> list[str]:
    return list(db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_id == box.id,
                                                                    AuditEntry.record_type == "mailbox")))


def test_the_mailbox_page_shows_the_test_label_the_count_and_the_actions(admin, box):
    page = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert re.search(r'Contoso VIP</strong> <span class="badge">exact</span> <span class="badge test"[^>]*>test</span>',
                     page)
    assert "would have taken 5 emails" in page
    assert "Reset the test count of Contoso VIP" in page and "Make Contoso VIP live" in page
    # The fallback route is live: no label, no actions.
    assert "Make Everything else live" not in page


def test_reset_count_starts_again_from_zero_and_is_in_the_history(admin, box):
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/reset-count", htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="routes"' in body
    assert "would have taken 0 emails" in body and "starts again from 0" in body
    assert trial().test_hits == 0 and trial().test_mode
    assert "route Contoso VIP test count reset" in history(box)


def test_reset_count_without_the_csrf_token_changes_nothing(admin, box):
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/reset-count", token=False)
    assert resp.status_code == 302 and trial().test_hits == 5
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/reset-count", token=False, htmx=True)
    assert resp.status_code == 400 and resp.headers["HX-Refresh"] == "true" and trial().test_hits == 5


def test_make_live_turns_test_off_and_is_in_the_history(admin, box):
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/make-live", htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Contoso VIP is live" in body
    assert 'class="badge test"' not in body and "Make Contoso VIP live" not in body
    assert trial().test_mode is False
    assert "route Contoso VIP changed" in history(box)


def test_make_live_without_htmx_goes_back_to_the_mailbox_page(admin, box):
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/make-live")
    assert resp.status_code in (302, 303) and resp.headers["Location"].endswith(f"/mailboxes/{box.id}#routes")
    assert trial().test_mode is False
    assert "Contoso VIP is live" in admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)


def test_make_live_without_the_csrf_token_changes_nothing(admin, box):
    resp = admin.post(f"/mailboxes/{box.id}/routes/{trial().id}/make-live", token=False, htmx=True)
    assert resp.status_code == 400 and trial().test_mode is True


def test_the_route_form_has_the_test_checkbox_with_its_explanation(admin, box):
    route = trial()
    page = admin.get(f"/mailboxes/{box.id}/routes/{route.id}/edit").get_data(as_text=True)
    assert re.search(r'<input[^>]* checked id="test_mode"', page)
    assert "nothing is filed by it: the next route decides" in page
    resp = admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", route_form(
        route.client, name="Contoso VIP", recipients="vip@acme.example"))
    assert resp.status_code == 303 and trial().test_mode is False
    resp = admin.post(f"/mailboxes/{box.id}/routes/{route.id}/edit", route_form(
        route.client, name="Contoso VIP", recipients="vip@acme.example", test_mode="y"))
    assert resp.status_code == 303 and trial().test_mode is True


def test_the_fallback_route_cannot_be_put_in_test(admin, box):
    fallback = db.session.scalar(select(Route).where(Route.fallback.is_(True)))
    resp = admin.post(f"/mailboxes/{box.id}/routes/{fallback.id}/edit", route_form(
        fallback.client, name="Everything else", fallback="y", test_mode="y"), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="test_mode-error"' in body and "cannot be in test" in body
    db.session.expire_all()
    assert db.session.get(Route, fallback.id).test_mode is False


def test_the_routing_check_lists_what_a_route_in_test_would_have_done(admin, box):
    admin.get("/unprocessed/check")
    resp = admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": "ann@contoso.com",
                                             "to": "vip@acme.example", "subject": "check"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200, body
    assert "<dt>Routes in test</dt>" in body
    assert "Contoso VIP would have filed this under Contoso with priority normal (not applied: it is in test)" in body
    assert trial().test_hits == 5

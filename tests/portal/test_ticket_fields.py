"""The ticket page's fields (priority, assignee, type) and its history of changes: who, when
in the viewer's time zone, old → new, status changes included."""

import re
from datetime import datetime, timezone

import pytest

from portal.extensions import db
from tests.mailfactory import email
from tests.portal.conftest import fresh
from tests.portal.conftest import ticket_history as history


@pytest.fixture
def desk(world, acme):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer")).ticket
    return acme.msp, acme.tom, acme.ana, ticket


def test_the_page_offers_the_msps_users_and_the_current_values(world, tech, desk):
    msp, _tom, ana, ticket = desk
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert f'<option value="{ana.id}"' in page and "eve@other.example" not in page
    assert re.search(r'<option (?=[^>]*\bselected\b)[^>]*value="normal"', page)
    assert "Assigned to</dt><dd>nobody" in page
    assert "No changes recorded yet." in page


def test_status_priority_assignee_and_type_change_in_one_place_as_one_entry(tech, desk):
    _msp, tom, ana, ticket = desk
    resp = tech.post(f"/tickets/{ticket.reference}/fields",
                     {"status": "open", "priority": "high", "assignee": str(ana.id), "type": "  Incident  "})
    assert resp.status_code == 303
    t = fresh(ticket.id)
    assert (t.status, t.priority, t.assignee_id, t.type) == ("open", "high", ana.id, "Incident")
    assert [(e.action, e.changes) for e in history(ticket.id)] == [("changed", {
        "status": ["new", "open"], "priority": ["normal", "high"],
        "assignee": [None, "ana@acme.example"], "type": [None, "Incident"]})]
    assert history(ticket.id)[0].actor_id == tom.id
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "status, priority, assignee, type changed." in page
    assert "Assigned to</dt><dd>ana@acme.example" in page
    assert '<td class="new">high</td>' in page and '<td class="new">ana@acme.example</td>' in page
    again = tech.post(f"/tickets/{ticket.reference}/fields",
                      {"priority": "high", "assignee": str(ana.id), "type": "Incident"})
    assert again.status_code == 303 and len(history(ticket.id)) == 1  # nothing changed: nothing recorded
    tech.post(f"/tickets/{ticket.reference}/fields", {"priority": "high", "assignee": "", "type": "Incident"},
              htmx=True)
    assert fresh(ticket.id).assignee_id is None
    assert history(ticket.id)[-1].changes == {"assignee": ["ana@acme.example", None]}


def test_history_shows_status_changes_with_who_and_when_in_the_viewers_time_zone(tech, desk):
    _msp, tom, _ana, ticket = desk
    tom.timezone = "Asia/Tokyo"
    db.session.commit()
    tech.post(f"/tickets/{ticket.reference}/fields", {"status": "waiting", "priority": "normal", "assignee": "",
                                                      "type": ""})
    (entry,) = history(ticket.id)
    entry.at = datetime(2026, 11, 29, 20, 30, tzinfo=timezone.utc)
    db.session.commit()
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    changes = page[page.index("History of changes"):]
    assert "2026-11-30 05:30 JST" in changes and "tom@acme.example" in changes
    assert '<td class="old">new</td>' in changes and '<td class="new">waiting</td>' in changes


def test_history_pages_as_a_fragment(app, tech, desk):
    ticket = desk[3]
    for i, p in enumerate(["high", "low"] * 12):
        tech.post(f"/tickets/{ticket.reference}/fields", {"priority": p, "assignee": "", "type": ""})
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "Page 1 of 2 (24 changes)" in page
    fragment = tech.hx_get(f"/tickets/{ticket.reference}/changes?page=2").get_data(as_text=True)
    assert "<html" not in fragment and "Page 2 of 2" in fragment and fragment.count('class="audit-entry"') == 4
    assert "<html" in tech.get(f"/tickets/{ticket.reference}/changes?page=2").get_data(as_text=True)


def test_bad_values_answer_422_next_to_the_field_and_change_nothing(world, tech, desk):
    _msp, _tom, ana, ticket = desk
    other = world.msp("Other MSP")
    eve = world.user(other, email="eve@other.example")
    resp = tech.post(f"/tickets/{ticket.reference}/fields",
                     {"priority": "urgent", "assignee": str(eve.id), "type": "x" * 61})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert re.search(r'<select (?=[^>]*aria-invalid="true")[^>]*id="field-priority"', page)
    assert "The priority is one of low, normal, high." in page
    assert "Choose an active user of your MSP, or nobody." in page
    assert "The type is at most 60 characters." in page
    t = fresh(ticket.id)
    assert (t.priority, t.assignee_id, t.type) == ("normal", None, None) and history(ticket.id) == []
    nonsense = tech.post(f"/tickets/{ticket.reference}/fields", {"priority": "low", "assignee": "abc"})
    assert nonsense.status_code == 422 and fresh(ticket.id).priority == "normal"


def test_with_htmx_the_fields_answer_their_own_part_and_tell_the_page_to_refresh(tech, desk):
    _msp, _tom, ana, ticket = desk
    url = f"/tickets/{ticket.reference}/fields"
    wrong = tech.post(url, {"priority": "urgent", "assignee": "", "type": ""}, htmx=True)
    body = wrong.get_data(as_text=True)
    assert wrong.status_code == 422 and "<html" not in body and 'id="ticket-fields"' in body
    assert "The priority is one of low, normal, high." in body and "HX-Trigger" not in wrong.headers
    saved = tech.post(url, {"priority": "high", "assignee": str(ana.id), "type": ""}, htmx=True)
    body = saved.get_data(as_text=True)
    assert saved.status_code == 200 and "HX-Redirect" not in saved.headers and "<html" not in body
    assert saved.headers["HX-Trigger"] == "ticket-changed"  # the history of changes refreshes on it
    assert f"{ticket.reference}: priority, assignee changed." in body
    assert 'id="ticket-facts" hx-swap-oob="true"' in body and "Assigned to</dt><dd>ana@acme.example" in body
    assert (fresh(ticket.id).priority, fresh(ticket.id).assignee_id) == ("high", ana.id)


def test_a_disabled_assignee_keeps_the_ticket_until_someone_else_takes_it(tech, desk):
    _msp, _tom, ana, ticket = desk
    tech.post(f"/tickets/{ticket.reference}/fields", {"priority": "normal", "assignee": str(ana.id)})
    ana.disabled = True
    db.session.commit()
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert re.search(rf'<option (?=[^>]*\bselected\b)[^>]*value="{ana.id}">ana@acme.example \(admin, disabled\)', page)
    resp = tech.post(f"/tickets/{ticket.reference}/fields", {"priority": "high", "assignee": str(ana.id)})
    assert resp.status_code == 303 and fresh(ticket.id).assignee_id == ana.id


def test_another_msps_ticket_is_404(world, make_browser, desk):
    ticket = desk[3]
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert eve.post(f"/tickets/{ticket.reference}/fields", {"priority": "high"}).status_code == 404
    assert eve.get(f"/tickets/{ticket.reference}/changes").status_code == 404
    assert fresh(ticket.id).priority == "normal"

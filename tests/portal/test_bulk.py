"""Bulk changes from the ticket list: status, assignee, priority on the ticked tickets, each
through the single-ticket path and audited, with htmx and without, never across MSPs."""

import re

import pytest

from tests.mailfactory import email
from tests.portal.conftest import fresh
from tests.portal.conftest import ticket_history as entries


@pytest.fixture
def desk(world, acme):
    tickets = [world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"case {i}")).ticket for i in range(3)]
    return acme.msp, acme.tom, acme.ana, tickets


def test_the_list_has_a_checkbox_per_ticket_and_the_bulk_bar(tech, desk):
    tickets = desk[3]
    page = tech.get("/tickets").get_data(as_text=True)
    for t in tickets:
        assert f'name="ticket" value="{t.id}"' in page
    assert "data-select-all" in page and "With the selected tickets" in page
    assert 'action="/tickets/bulk"' in page and 'hx-post="/tickets/bulk"' in page
    assert "tom@acme.example" in page and "ana@acme.example" in page  # who may be assigned


def test_bulk_close_without_javascript_changes_each_ticket_and_audits_it(tech, desk):
    _msp, tom, _ana, (a, b, c) = desk
    resp = tech.post("/tickets/bulk?client=&q=case", {"ticket": [a.id, b.id], "status": "closed"})
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/tickets?client=&q=case")  # back to the same list
    assert fresh(a.id).status == "closed" and fresh(b.id).status == "closed" and fresh(c.id).status == "new"
    for t in (a, b):
        (entry,) = entries(t.id)
        assert entry.action == "status" and entry.changes == {"status": ["new", "closed"]}
        assert entry.actor_id == tom.id
    assert entries(c.id) == []
    page = tech.get(resp.headers["Location"]).get_data(as_text=True)
    assert "2 tickets updated." in page


def test_bulk_assign_and_priority_with_htmx_then_unassign(tech, desk):
    _msp, _tom, ana, (a, b, c) = desk
    resp = tech.post("/tickets/bulk", {"ticket": [a.id, b.id, c.id], "assignee": str(ana.id), "priority": "high"},
                     htmx=True)
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == "/tickets"
    for t in (a, b, c):
        t = fresh(t.id)
        assert t.assignee_id == ana.id and t.priority == "high"
        # One entry naming both fields, as the ticket page's own change writes it.
        assert [(e.action, e.changes) for e in entries(t.id)] == [
            ("changed", {"priority": ["normal", "high"], "assignee": [None, "ana@acme.example"]})]
    assert "3 tickets updated." in tech.get("/tickets").get_data(as_text=True)
    tech.post("/tickets/bulk", {"ticket": [a.id], "assignee": "none"}, htmx=True)
    assert fresh(a.id).assignee_id is None and fresh(b.id).assignee_id == ana.id
    assert entries(a.id)[-1].changes == {"assignee": ["ana@acme.example", None]}


def test_tickets_already_so_are_counted_apart_and_not_audited_again(tech, desk):
    a, b = desk[3][0], desk[3][1]
    tech.post("/tickets/bulk", {"ticket": [a.id], "status": "open"})
    resp = tech.post("/tickets/bulk", {"ticket": [a.id, b.id], "status": "open"})
    assert len(entries(a.id)) == 1 and len(entries(b.id)) == 1
    page = tech.get(resp.headers["Location"]).get_data(as_text=True)
    assert "1 ticket updated. 1 ticket was already so." in page


def test_ids_of_another_msp_are_ignored_and_reported(world, tech, desk):
    a = desk[3][0]
    other = world.msp("Other MSP")
    obox = world.mailbox(other, address="help@other.example", acknowledge=False)
    foreign = world.deliver(obox, email(to=["help@other.example"], subject="not yours")).ticket
    resp = tech.post("/tickets/bulk", {"ticket": [a.id, foreign.id, "nonsense"], "status": "closed"})
    assert resp.status_code == 303
    assert fresh(a.id).status == "closed"
    assert fresh(foreign.id).status == "new" and entries(foreign.id) == []
    page = tech.get("/tickets").get_data(as_text=True)
    assert "1 ticket updated. 2 selected tickets were not found and left alone." in page


def test_a_user_of_another_msp_cannot_be_assigned(world, tech, desk):
    a = desk[3][0]
    other = world.msp("Other MSP")
    eve = world.user(other, email="eve@other.example")
    resp = tech.post("/tickets/bulk", {"ticket": [a.id], "assignee": str(eve.id)}, htmx=True)
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "<html" not in body and "Choose an active user of your MSP" in body
    assert re.search(r'id="bulk-assignee"[^>]*aria-invalid="true"', body)
    assert fresh(a.id).assignee_id is None and entries(a.id) == []


def test_nothing_selected_or_nothing_to_change_says_so_by_the_bar(tech, desk):
    a, b = desk[3][0], desk[3][1]
    nothing = tech.post("/tickets/bulk", {"status": "closed"})
    assert nothing.status_code == 422
    page = nothing.get_data(as_text=True)
    assert "<html" in page and "Select at least one ticket." in page  # the whole page without JavaScript
    no_change = tech.post("/tickets/bulk", {"ticket": [a.id, b.id]}, htmx=True)
    fragment = no_change.get_data(as_text=True)
    assert no_change.status_code == 422 and "Choose a status, an assignee or a priority" in fragment
    # The selection is kept for the second try.
    assert re.search(rf'value="{a.id}"[^>]*checked', fragment) and re.search(rf'value="{b.id}"[^>]*checked', fragment)
    bad = tech.post("/tickets/bulk", {"ticket": [a.id], "status": "merged"}, htmx=True)
    assert bad.status_code == 422 and "The status is one of" in bad.get_data(as_text=True)
    assert fresh(a.id).status == "new" and entries(a.id) == []


def test_bulk_needs_the_csrf_token(tech, desk):
    a = desk[3][0]
    resp = tech.post("/tickets/bulk", {"ticket": [a.id], "status": "closed"}, token=False)
    assert resp.status_code == 302  # back, with "the form was out of date"
    assert fresh(a.id).status == "new"

"""Quick actions on a ticket: Assign to me (on its page and in the list), the one form for
status, priority, assignee and type, and the jump to the composer on a long conversation."""

import pytest

from tests.mailfactory import email
from tests.portal.conftest import fresh
from tests.portal.conftest import ticket_history as history


@pytest.fixture
def desk(world, acme):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer",
                                           message_id="<p1@contoso.com>")).ticket
    return acme, ticket


def test_assign_to_me_on_the_ticket_is_one_audited_change(tech, desk):
    acme, ticket = desk
    resp = tech.post(f"/tickets/{ticket.reference}/assign-to-me", htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["HX-Trigger"] == "ticket-changed"
    assert f"{ticket.reference} is assigned to you." in body and 'id="ticket-facts"' in body
    assert "Assign to me</button>" not in body  # it is mine now
    assert fresh(ticket.id).assignee_id == acme.tom.id
    assert [(e.action, e.changes, e.actor_id) for e in history(ticket.id)] == [
        ("assigned", {"assignee": [None, "tom@acme.example"]}, acme.tom.id)]
    # Again: nothing changes, nothing is recorded.
    tech.post(f"/tickets/{ticket.reference}/assign-to-me", htmx=True)
    assert len(history(ticket.id)) == 1


def test_assign_to_me_from_the_list_keeps_its_filters(tech, desk):
    acme, ticket = desk
    page = tech.get("/tickets?q=Printer").get_data(as_text=True)
    assert f'hx-post="/tickets/{ticket.reference}/assign-to-me?q=Printer&amp;from=list"' in page
    resp = tech.post(f"/tickets/{ticket.reference}/assign-to-me?q=Printer&from=list", htmx=True)
    assert resp.status_code == 204 and resp.headers["HX-Trigger"] == "ticket-changed"  # the list refreshes
    assert fresh(ticket.id).assignee_id == acme.tom.id
    listed = tech.hx_get("/tickets?q=Printer").get_data(as_text=True)
    assert "Assign to me</button>" not in listed and ">you<" in listed.replace("\n", "").replace(" ", "")
    # Without JavaScript the button posts the list's form and comes back to the same list.
    resp = tech.post(f"/tickets/{ticket.reference}/assign-to-me?q=Printer&from=list")
    assert resp.status_code == 303 and resp.headers["Location"] == "/tickets?q=Printer"


def test_assign_to_me_needs_the_csrf_token_and_a_ticket_of_ones_msp(world, tech, desk):
    _acme, ticket = desk
    assert tech.post(f"/tickets/{ticket.reference}/assign-to-me", token=False).status_code == 302
    assert fresh(ticket.id).assignee_id is None and history(ticket.id) == []
    other = world.msp("Other MSP")
    box = world.mailbox(other, address="help@other.example", acknowledge=False)
    for subject in ("One", "Two"):
        world.deliver(box, email(to=["help@other.example"], subject=subject))
    assert tech.post("/tickets/T-2/assign-to-me").status_code == 404


def test_a_refused_field_changes_nothing_else(tech, desk):
    _acme, ticket = desk
    resp = tech.post(f"/tickets/{ticket.reference}/fields", {"status": "merged", "priority": "high"}, htmx=True)
    assert resp.status_code == 422 and "The status is one of" in resp.get_data(as_text=True)
    t = fresh(ticket.id)
    assert (t.status, t.priority) == ("new", "normal") and history(ticket.id) == []


def test_a_long_conversation_offers_the_jump_to_the_reply(world, tech, desk):
    acme, ticket = desk
    assert 'id="jump-to-reply"' not in tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    for n in range(2):
        world.deliver(acme.box, email(sender="alice@contoso.com", subject=f"Re: [{ticket.reference}] Printer",
                                      in_reply_to="<p1@contoso.com>", body=f"More {n}"))
    page = tech.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert 'href="#ticket-reply"' in page and 'id="jump-to-reply"' in page

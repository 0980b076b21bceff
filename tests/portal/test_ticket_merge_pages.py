"""Merge into…, Split…, Unmerge and merging from the list, as a technician uses them: each
confirmed first, never across MSPs; and a follow-up's page links to the closed conversation."""

import re

import pytest

from tests.mailfactory import email
from tests.portal.conftest import fresh


@pytest.fixture
def desk(world, acme):
    first = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer", cc=["bob@contoso.com"]))
    second = world.deliver(acme.box, email(sender="carol@contoso.com", subject="Printer again"))
    return first, second


def test_merge_into_is_found_confirmed_then_done_with_a_banner_on_the_merged_ticket(tech, desk):
    first, second = desk
    a, b = first.ticket, second.ticket
    page = tech.get(f"/tickets/{a.reference}").get_data(as_text=True)
    assert f'href="/tickets/{a.reference}/merge"' in page and f'href="/tickets/{a.reference}/split"' in page
    found = tech.get(f"/tickets/{a.reference}/merge?q=again").get_data(as_text=True)
    assert f"into={b.reference}" in found and f"Choose {a.reference}" not in found
    confirm = tech.get(f"/tickets/{a.reference}/merge?into={b.reference}").get_data(as_text=True)
    assert f"Merge {a.reference} into {b.reference}?" in confirm
    assert "1 message of" in confirm and "alice@contoso.com, bob@contoso.com join the CCs" in confirm
    assert fresh(a.id).status == "new"  # nothing happens before the confirmation
    resp = tech.post(f"/tickets/{a.reference}/merge", {"into": b.reference}, htmx=True)
    assert resp.headers["HX-Redirect"] == f"/tickets/{b.reference}"
    assert fresh(a.id).merged_into_id == b.id
    merged = tech.get(f"/tickets/{a.reference}").get_data(as_text=True)
    assert 'id="merged-banner"' in merged and f'href="/tickets/{b.reference}"' in merged
    assert "Unmerge" in merged and "Merge into…" not in merged
    resp = tech.post(f"/tickets/{a.reference}/unmerge", {})
    assert resp.status_code == 303 and fresh(a.id).status == "new" and fresh(a.id).merged_into_id is None
    assert "is no longer merged" in tech.get(f"/tickets/{a.reference}").get_data(as_text=True)


def test_a_refused_merge_says_why(tech, desk):
    a = desk[0].ticket
    resp = tech.post(f"/tickets/{a.reference}/merge", {"into": a.reference})
    assert resp.status_code == 422 and "cannot be merged into itself" in resp.get_data(as_text=True)
    resp = tech.post(f"/tickets/{a.reference}/merge", {"into": ""})
    assert resp.status_code == 422 and "Choose the ticket to merge into." in resp.get_data(as_text=True)


def test_a_technician_cannot_merge_into_a_ticket_of_another_msp(world, tech, desk):
    a = desk[0].ticket
    other = world.msp("Other MSP", code="OTH")
    other.reference_prefix = "OTH"
    box = world.mailbox(other, address="help@other.example", acknowledge=False)
    theirs = world.deliver(box, email(to=("help@other.example",), subject="Theirs")).ticket
    assert tech.post(f"/tickets/{a.reference}/merge", {"into": theirs.reference}).status_code == 404
    assert tech.get(f"/tickets/{a.reference}/merge?into={theirs.reference}").status_code == 404
    found = tech.get(f"/tickets/{a.reference}/merge?q=Theirs").get_data(as_text=True)
    assert theirs.reference not in found and "No ticket of yours matches" in found
    assert fresh(a.id).status == "new" and fresh(theirs.id).status == "new"


def test_split_offers_the_messages_confirms_and_makes_a_linked_ticket(world, acme, tech, desk):
    first = desk[0]
    reply = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Re: Printer",
                                          in_reply_to=first.message.message_id, body="Also the scanner."))
    a = first.ticket
    pick = tech.get(f"/tickets/{a.reference}/split").get_data(as_text=True)
    assert f'name="message" value="{first.message.id}"' in pick and f'value="{reply.message.id}"' in pick
    confirm = tech.get(f"/tickets/{a.reference}/split?message={reply.message.id}").get_data(as_text=True)
    assert "Make a new ticket of 1 message?" in confirm and "the other 1 stay" in confirm
    resp = tech.post(f"/tickets/{a.reference}/split", {"message": [reply.message.id]}, htmx=True)
    child_ref = re.search(r"/tickets/(\S+)$", resp.headers["HX-Redirect"]).group(1)
    page = tech.get(f"/tickets/{child_ref}").get_data(as_text=True)
    assert "Also the scanner." in page and f"Merge back into {a.reference}" in page
    assert f"/tickets/{child_ref}/merge?into={a.reference}" in page
    everything = [str(first.message.id)]
    resp = tech.post(f"/tickets/{a.reference}/split", {"message": everything})
    assert resp.status_code == 422 and "Leave at least one message" in resp.get_data(as_text=True)


def test_merge_selected_from_the_list_is_confirmed_then_done(world, acme, tech, desk):
    a, b = desk[0].ticket, desk[1].ticket
    c = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Third")).ticket
    listing = tech.get("/tickets").get_data(as_text=True)
    assert 'formaction="/tickets/merge"' in listing and "Merge into (reference)" in listing
    resp = tech.post("/tickets/merge", {"ticket": [a.id, b.id], "into": c.reference}, htmx=True)
    confirm_url = resp.headers["HX-Redirect"]
    assert confirm_url.startswith("/tickets/merge?") and fresh(a.id).status == "new"
    confirm = tech.get(confirm_url).get_data(as_text=True)
    assert f"Merge 2 tickets into {c.reference}" in confirm
    resp = tech.post("/tickets/merge", {"ticket": [a.id, b.id], "into": c.reference, "confirm": "1"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/tickets/{c.reference}")
    assert fresh(a.id).merged_into_id == fresh(b.id).merged_into_id == c.id
    resp = tech.post("/tickets/merge", {"ticket": [c.id], "into": "T-999"}, htmx=True)
    assert resp.status_code == 422 and "There is no ticket T-999 in your MSP." in resp.get_data(as_text=True)


def test_a_follow_up_of_a_closed_ticket_links_to_the_closed_conversation(world, acme, tech, db):
    first = world.deliver(acme.box, email(sender="alice@contoso.com", cc=["bob@contoso.com"]))
    first.ticket.status = "closed"
    db.session.commit()
    follow = world.deliver(acme.box, email(sender="carol@contoso.com", cc=["dave@contoso.com"],
                                           in_reply_to=first.message.message_id, subject="Re: Printer on fire"))
    t = follow.ticket
    assert t.id != first.ticket.id and t.contact.email == "alice@contoso.com"
    assert t.cc == ["bob@contoso.com", "carol@contoso.com", "dave@contoso.com"]  # closed CCs, writer, new CCs
    assert any(f"follow-up of {first.ticket.reference}" in line for line in follow.trace)
    page = tech.get(f"/tickets/{t.reference}").get_data(as_text=True)
    assert f'<a href="/tickets/{first.ticket.reference}">{first.ticket.reference}</a> (follow-up)' in page

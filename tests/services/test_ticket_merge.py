"""Merging, unmerging and splitting tickets on a real database, and the mail that follows them."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Message, Ticket, TicketLink
from portal.services import ValidationError, commit, ticket_merge
from tests.mailfactory import email


def reply_to(result, **kw):
    return email(in_reply_to=result.message.message_id, subject="Re: " + result.message.subject, **kw)


def history(ticket):
    return [(e.action, e.changes) for e in db.session.scalars(
        select(AuditEntry).where(AuditEntry.record_type == "ticket", AuditEntry.record_id == ticket.id)
        .order_by(AuditEntry.id))]


def on(ticket):
    return [m.id for m in db.session.scalars(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id))]


@pytest.fixture
def two(world, acme):
    a = world.deliver(acme.box, email(sender="bob@contoso.com", cc=["carol@contoso.com"], subject="Printer"))
    a2 = world.deliver(acme.box, reply_to(a, sender="bob@contoso.com"))
    b = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer again"))
    assert a2.ticket.id == a.ticket.id
    return a, a2, b


def test_merge_moves_messages_contacts_and_is_in_both_histories(acme, two):
    a, a2, b = two
    source, into = a.ticket, b.ticket
    plan = ticket_merge.plan_merge(source, into)
    assert (plan.messages, plan.addresses) == (2, ["bob@contoso.com", "carol@contoso.com"])
    ticket_merge.merge(source, into, acme.tom)
    commit()
    assert on(into) == sorted([a.message.id, a2.message.id, b.message.id]) and on(source) == []
    assert (source.status, source.merged_into_id) == ("merged", into.id)
    assert into.cc == ["bob@contoso.com", "carol@contoso.com"]
    link = db.session.scalar(select(TicketLink).where(TicketLink.ticket_id == source.id))
    assert (link.linked_id, link.kind) == (into.id, "merged")
    assert history(source)[-1] == ("merged", {"status": ["new", "merged"], "merged into": [None, into.reference],
                                              "messages moved": [None, 2]})
    action, changes = history(into)[-1]
    assert action == "merged in" and changes["merged in"] == [None, source.reference]


def test_later_mail_to_the_merged_tickets_references_lands_on_the_survivor(world, acme, two):
    a, _a2, b = two
    ticket_merge.merge(a.ticket, b.ticket, acme.tom)
    commit()
    by_header = world.deliver(acme.box, reply_to(a, sender="bob@contoso.com"))
    by_subject = world.deliver(acme.box, email(sender="bob@contoso.com", subject=f"[{a.ticket.reference}] more"))
    assert by_header.ticket.id == by_subject.ticket.id == b.ticket.id
    assert any(f"{a.ticket.reference} was merged into {b.ticket.reference}" in line for line in by_subject.trace)


def test_mail_follows_a_chain_of_merges_and_a_loop_stops(world, acme, two):
    a, _a2, b = two
    c = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Third")).ticket
    ticket_merge.merge(a.ticket, b.ticket, acme.tom)
    ticket_merge.merge(b.ticket, c, acme.tom)
    commit()
    chained = world.deliver(acme.box, email(sender="bob@contoso.com", subject=f"[{a.ticket.reference}] hello"))
    assert chained.ticket.id == c.id
    # A loop no merge can make (refused) but a database can hold: the mail stays on the ticket it named.
    c.status, c.merged_into_id = "merged", a.ticket.id
    commit()
    looped = world.deliver(acme.box, email(sender="bob@contoso.com", subject=f"[{a.ticket.reference}] again"))
    assert looped.ticket is not None and looped.outcome == "appended"
    assert any("lead back to it or nowhere" in line for line in looped.trace)


def test_unmerge_restores_the_moved_messages_status_and_ccs(world, acme, two):
    a, a2, b = two
    a.ticket.status = "open"
    ticket_merge.merge(a.ticket, b.ticket, acme.tom)
    commit()
    later = world.deliver(acme.box, reply_to(b, sender="alice@contoso.com"))  # written to the survivor
    ticket_merge.unmerge(a.ticket, acme.ana)
    commit()
    assert on(a.ticket) == [a.message.id, a2.message.id]
    assert on(b.ticket) == [b.message.id, later.message.id]
    assert (a.ticket.status, a.ticket.merged_into_id) == ("open", None)
    assert b.ticket.cc == []
    assert db.session.scalar(select(TicketLink).where(TicketLink.kind == "merged")) is None
    assert all("merged_from" not in m.details for m in db.session.scalars(select(Message)))
    assert history(a.ticket)[-1][0] == history(b.ticket)[-1][0] == "unmerged"
    # Mail to it lands on it again.
    assert world.deliver(acme.box, reply_to(a, sender="bob@contoso.com")).ticket.id == a.ticket.id


def test_unmerge_of_a_chain_goes_back_one_merge_at_a_time(world, acme, two):
    a, _a2, b = two
    c = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Third")).ticket
    ticket_merge.merge(a.ticket, b.ticket, acme.tom)
    ticket_merge.merge(b.ticket, c, acme.tom)
    with pytest.raises(ValidationError, match="unmerge"):
        ticket_merge.unmerge(a.ticket, acme.tom)
    ticket_merge.unmerge(b.ticket, acme.tom)
    assert on(b.ticket) == sorted([a.message.id, _a2.message.id, b.message.id])
    ticket_merge.unmerge(a.ticket, acme.tom)
    assert on(a.ticket) == [a.message.id, _a2.message.id] and on(b.ticket) == [b.message.id]


@pytest.mark.parametrize("case", ["itself", "into merged", "already merged"])
def test_merges_that_are_refused(world, acme, two, case):
    a, _a2, b = two
    c = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Third")).ticket
    if case == "itself":
        source, into, words = a.ticket, a.ticket, "into itself"
    elif case == "into merged":
        ticket_merge.merge(b.ticket, c, acme.tom)
        source, into, words = a.ticket, b.ticket, "merge into that one"
    else:
        ticket_merge.merge(a.ticket, c, acme.tom)
        source, into, words = a.ticket, b.ticket, "already merged"
    with pytest.raises(ValidationError, match=words):
        ticket_merge.merge(source, into, acme.tom)


def test_merge_many_merges_every_selected_ticket_or_none(world, acme, two):
    a, _a2, b = two
    c = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Third")).ticket
    ids = [str(a.ticket.id), str(b.ticket.id), str(c.id)]
    done = ticket_merge.merge_many(acme.msp.id, ids, c.reference.lower(), acme.tom)
    commit()
    assert [p.source.id for p in done] == [a.ticket.id, b.ticket.id]  # the target itself is skipped
    assert {a.ticket.merged_into_id, b.ticket.merged_into_id} == {c.id}
    d = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Fourth")).ticket
    with pytest.raises(ValidationError, match="already merged"):
        ticket_merge.merge_many(acme.msp.id, [str(a.ticket.id), str(d.id)], c.reference, acme.tom)
    with pytest.raises(ValidationError, match="no ticket"):
        ticket_merge.merge_many(acme.msp.id, [str(d.id)], "T-999", acme.tom)


def test_a_ticket_of_another_msp_is_no_target(world, acme, two):
    a, _a2, _b = two
    other = world.msp("Other MSP", code="OTH")
    other.reference_prefix = "OTH"
    other_box = world.mailbox(other, address="help@other.example", acknowledge=False)
    theirs = world.deliver(other_box, email(to=("help@other.example",))).ticket
    with pytest.raises(ValidationError, match="not a ticket of your MSP"):
        ticket_merge.merge(a.ticket, theirs, acme.tom)
    with pytest.raises(ValidationError, match="no ticket"):
        ticket_merge.merge_many(acme.msp.id, [str(a.ticket.id)], theirs.reference + "X", acme.tom)
    assert theirs not in ticket_merge.merge_targets(a.ticket, theirs.subject)


def test_split_makes_a_linked_ticket_of_the_chosen_messages_and_merging_back_undoes_it(world, acme, two):
    a, a2, _b = two
    parent = a.ticket
    child = ticket_merge.split(parent, [str(a2.message.id)], acme.tom)
    commit()
    assert on(child) == [a2.message.id] and on(parent) == [a.message.id]
    assert (child.client_id, child.contact_id, child.cc, child.split_from_id, child.status) == (
        parent.client_id, parent.contact_id, parent.cc, parent.id, "open")
    assert child.number == parent.number + 2  # the MSP's counter: T-1, T-2 (b), then this one
    link = db.session.scalar(select(TicketLink).where(TicketLink.kind == "split"))
    assert (link.ticket_id, link.linked_id) == (parent.id, child.id)
    assert history(parent)[-1] == ("split", {"split off": [None, child.reference], "messages moved": [None, 1]})
    assert history(child)[-1][0] == "split from"
    # A reply to the split-off message lands on the new ticket.
    assert world.deliver(acme.box, reply_to(a2, sender="bob@contoso.com")).ticket.id == child.id
    ticket_merge.merge(child, parent, acme.tom)
    commit()
    assert len(on(parent)) == 3 and child.status == "merged"
    # The next ticket still gets a fresh number.
    assert world.deliver(acme.box, email(subject="Next")).ticket.number == child.number + 1


@pytest.mark.parametrize("chosen, words", [([], "Choose the messages"), (None, "Leave at least one")])
def test_splits_that_are_refused(acme, two, chosen, words):
    a, a2, _b = two
    ids = [str(a.message.id), str(a2.message.id)] if chosen is None else chosen
    with pytest.raises(ValidationError, match=words):
        ticket_merge.split(a.ticket, ids, acme.tom)
    assert db.session.scalar(select(Ticket).where(Ticket.split_from_id.is_not(None))) is None

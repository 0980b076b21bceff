"""Merging tickets into one and splitting messages off into a new ticket, each in both tickets'
history and each undone by its reverse: unmerge puts the moved messages back on the merged
ticket, and a split is undone by merging the new ticket back. Mail that later threads onto a
merged ticket (by Message-ID, reference, tag or token) follows it to the survivor
(portal.inbound.tickets). Flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select

from portal.extensions import db
from portal.inbound.context import TicketNumbers
from portal.mail.refs import RefFormat
from portal.models import AuditEntry, Client, Message, Ticket, TicketLink, User
from portal.models.base import utcnow
from portal.services import ValidationError, audit, containing, sla
from portal.services.tickets import WORK_STATUSES, get_ticket

MERGE_MAX = 50
SEARCH_MAX = 20
# Message.details: the tickets a message was merged away from, the latest last (unmerge pops it).
MERGED_FROM = "merged_from"


@dataclass
class MergePlan:
    """What merging `source` into `into` moves: its messages, and the addresses (its contact and
    CCs) that join the survivor's CCs."""

    source: Ticket
    into: Ticket
    messages: int = 0
    addresses: list[str] = field(default_factory=list)


def _pair_problem(source: Ticket, into: Ticket) -> str | None:
    if source.msp_id != into.msp_id:
        return f"{into.reference} is not a ticket of your MSP."
    if source.id == into.id:
        return f"{source.reference} cannot be merged into itself."
    if source.status == "merged":
        return f"{source.reference} is already merged into another ticket."
    if into.status == "merged":
        return f"{into.reference} is merged into another ticket: merge into that one instead."
    return None


def _joining(source: Ticket, into: Ticket) -> list[str]:
    """The source's contact and CCs that the survivor does not have yet."""
    have = set(into.cc) | ({into.contact.email} if into.contact else set())
    wanted = ([source.contact.email] if source.contact else []) + list(source.cc)
    return [a for a in dict.fromkeys(wanted) if a not in have]


def plan_merge(source: Ticket, into: Ticket) -> MergePlan:
    """What a merge would do, for the confirmation; ValidationError if it may not be done."""
    if problem := _pair_problem(source, into):
        raise ValidationError({"into": [problem]})
    count = db.session.scalar(select(func.count()).select_from(Message).where(Message.ticket_id == source.id))
    return MergePlan(source, into, count or 0, _joining(source, into))


def _link(ticket: Ticket, linked: Ticket, kind: str) -> None:
    existing = db.session.scalar(select(TicketLink).where(TicketLink.ticket_id == ticket.id,
                                                          TicketLink.linked_id == linked.id))
    if existing is not None:
        existing.kind = kind
    else:
        db.session.add(TicketLink(ticket=ticket, linked=linked, kind=kind))


def merge(source: Ticket, into: Ticket, actor: User | None) -> MergePlan:
    """Move the source's messages, contact and CCs onto `into`; the source becomes `merged`,
    linked to it, and keeps its reference so that later mail finds the survivor."""
    plan = plan_merge(source, into)
    for message in db.session.scalars(select(Message).where(Message.ticket_id == source.id)):
        details = dict(message.details or {})
        details[MERGED_FROM] = [*details.get(MERGED_FROM, []), source.id]
        message.details, message.ticket_id = details, into.id
    before_cc = list(into.cc)
    into.cc = [*into.cc, *plan.addresses]
    old_status = source.status
    source.status, source.merged_into_id = "merged", into.id
    sla.status_changed(source, old_status, "merged")
    source.updated_at = into.updated_at = utcnow()
    into.new_information = into.new_information or source.new_information
    _link(source, into, "merged")
    audit.record(actor, source.msp_id, "ticket", source.id, "merged",
                 {"status": [old_status, "merged"], "merged into": [None, into.reference],
                  "messages moved": [None, plan.messages]})
    into_changes = {"merged in": [None, source.reference], "messages moved": [None, plan.messages]}
    if plan.addresses:
        into_changes["cc"] = [before_cc, list(into.cc)]
    audit.record(actor, into.msp_id, "ticket", into.id, "merged in", into_changes)
    db.session.flush()
    return plan


def merge_many(msp_id: int, ids: Sequence[str], into_reference: str, actor: User | None) -> list[MergePlan]:
    """Merge the selected tickets (ids from the list) into the ticket with this reference, each
    as on its own page; nothing is merged unless every one may be."""
    into = find_target(msp_id, into_reference)
    sources = selected_tickets(msp_id, ids)
    problems = [p for s in sources if s.id != into.id and (p := _pair_problem(s, into))]
    if problems:
        raise ValidationError({"into": problems})
    return [merge(s, into, actor) for s in sources if s.id != into.id]


def find_target(msp_id: int, reference: str) -> Ticket:
    """The ticket to merge into, by reference within the MSP, else a ValidationError."""
    reference = (reference or "").strip()
    if not reference:
        raise ValidationError({"into": ["Choose the ticket to merge into."]})
    into = get_ticket(msp_id, reference[:40])
    if into is None:
        raise ValidationError({"into": [f"There is no ticket {reference[:40]} in your MSP."]})
    return into


def selected_tickets(msp_id: int, ids: Sequence[str]) -> list[Ticket]:
    wanted = sorted({int(i) for i in ids if str(i).isascii() and str(i).isdigit() and len(str(i)) <= 12})
    if not wanted:
        raise ValidationError({"ticket": ["Select at least one ticket."]})
    if len(wanted) > MERGE_MAX:
        raise ValidationError({"ticket": [f"Merge at most {MERGE_MAX} tickets at once."]})
    return list(db.session.scalars(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.id.in_(wanted))
                                   .order_by(Ticket.id)))


def plan_many(msp_id: int, ids: Sequence[str], into_reference: str) -> list[MergePlan]:
    into = find_target(msp_id, into_reference)
    sources = [s for s in selected_tickets(msp_id, ids) if s.id != into.id]
    if not sources:
        raise ValidationError({"ticket": ["Select a ticket other than the one to merge into."]})
    plans, problems = [], []
    for source in sources:
        try:
            plans.append(plan_merge(source, into))
        except ValidationError as exc:
            problems += exc.errors["into"]
    if problems:
        raise ValidationError({"into": problems})
    return plans


def merge_targets(ticket: Ticket, query: str) -> list[Ticket]:
    """Tickets of the same MSP this one may be merged into: by reference or words of the subject."""
    query = " ".join((query or "").split())[:100]
    if not query:
        return []
    return list(db.session.scalars(
        select(Ticket).where(Ticket.msp_id == ticket.msp_id, Ticket.id != ticket.id, Ticket.status != "merged",
                             or_(Ticket.reference == query.upper(), Ticket.subject.ilike(containing(query), escape="\\")))
        .order_by(Ticket.reference == query.upper(), Ticket.updated_at.desc()).limit(SEARCH_MAX)))


def _last_entry(ticket: Ticket, action: str) -> AuditEntry | None:
    return db.session.scalar(select(AuditEntry).where(
        AuditEntry.msp_id == ticket.msp_id, AuditEntry.record_type == "ticket", AuditEntry.record_id == ticket.id,
        AuditEntry.action == action).order_by(AuditEntry.id.desc()).limit(1))


def unmerge(source: Ticket, actor: User | None) -> Ticket:
    """Undo a merge: the messages moved from `source` go back to it, the addresses it brought
    leave the survivor's CCs, and it gets its status back. Returns the survivor."""
    into = source.merged_into if source.status == "merged" else None
    if into is None:
        raise ValidationError({"": [f"{source.reference} is not merged into another ticket."]})
    if into.status == "merged":
        raise ValidationError({"": [f"{into.reference} was merged into another ticket since: "
                                    f"unmerge {into.reference} first."]})
    moved = 0
    for message in db.session.scalars(select(Message).where(Message.ticket_id == into.id)):
        stack = list((message.details or {}).get(MERGED_FROM, []))
        if stack and stack[-1] == source.id:
            details = dict(message.details)
            if stack[:-1]:
                details[MERGED_FROM] = stack[:-1]
            else:
                details.pop(MERGED_FROM)
            message.details, message.ticket_id = details, source.id
            moved += 1
    entry = _last_entry(source, "merged")
    old_status = (entry.changes or {}).get("status", [None])[0] if entry else None
    before_cc = list(into.cc)
    added = _cc_added(into, source)
    into.cc = [a for a in into.cc if a not in added]
    source.status = old_status if old_status in WORK_STATUSES else "open"
    sla.status_changed(source, "merged", source.status)
    source.merged_into_id = None
    source.updated_at = into.updated_at = utcnow()
    link = db.session.scalar(select(TicketLink).where(TicketLink.ticket_id == source.id,
                                                      TicketLink.linked_id == into.id, TicketLink.kind == "merged"))
    if link is not None:
        db.session.delete(link)
    audit.record(actor, source.msp_id, "ticket", source.id, "unmerged",
                 {"status": ["merged", source.status], "merged into": [into.reference, None],
                  "messages moved": [None, moved]})
    into_changes = {"merged in": [source.reference, None], "messages moved": [None, moved]}
    if into.cc != before_cc:
        into_changes["cc"] = [before_cc, list(into.cc)]
    audit.record(actor, into.msp_id, "ticket", into.id, "unmerged", into_changes)
    db.session.flush()
    return into


def _cc_added(into: Ticket, source: Ticket) -> set[str]:
    """The CCs that merging `source` added to the survivor (from the survivor's history)."""
    entry = _last_entry(into, "merged in")
    changes = entry.changes if entry is not None else {}
    if changes.get("merged in", [None, None])[1] != source.reference or "cc" not in changes:
        return set()
    before, after = changes["cc"]
    return set(after) - set(before)


def split(ticket: Ticket, message_ids: Sequence[str], actor: User | None) -> Ticket:
    """A new ticket made of the chosen messages of this one (same client, contact, CCs, mailbox
    and priority), linked to it; merging the new ticket back undoes the split."""
    chosen = plan_split(ticket, message_ids)
    msp = db.session.get(Client, ticket.msp_id)
    numbers = TicketNumbers(ticket.msp_id, RefFormat(prefix=msp.reference_prefix or "T"))
    number, reference = numbers.next_reference()
    numbers.save()
    child = Ticket(msp_id=ticket.msp_id, number=number, reference=reference, mailbox_id=ticket.mailbox_id,
                   client_id=ticket.client_id, contact_id=ticket.contact_id, subject=chosen[0].subject or ticket.subject,
                   status="open", priority=ticket.priority, type=ticket.type, source=ticket.source,
                   assignee_id=ticket.assignee_id, new_information=False, cc=list(ticket.cc),
                   split_from_id=ticket.id)
    db.session.add(child)
    # The split-off conversation's clocks run from its own first mail, under the same policy.
    sla.ticket_created(child, ticket.sla_policy_id, sla.received_at(chosen[0].raw_message))
    db.session.flush()
    for message in chosen:
        message.ticket_id = child.id
    ticket.updated_at = utcnow()
    _link(ticket, child, "split")
    audit.record(actor, ticket.msp_id, "ticket", ticket.id, "split",
                 {"split off": [None, child.reference], "messages moved": [None, len(chosen)]})
    audit.record(actor, ticket.msp_id, "ticket", child.id, "split from",
                 {"split from": [None, ticket.reference], "messages moved": [None, len(chosen)]})
    db.session.flush()
    return child


def plan_split(ticket: Ticket, message_ids: Sequence[str]) -> list[Message]:
    """The chosen messages of this ticket, for the confirmation; ValidationError if the split
    may not be done."""
    if ticket.status == "merged":
        raise ValidationError({"message": [f"{ticket.reference} is merged into another ticket: split that one."]})
    wanted = {int(i) for i in message_ids if str(i).isascii() and str(i).isdigit() and len(str(i)) <= 12}
    messages = list(db.session.scalars(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)))
    chosen = [m for m in messages if m.id in wanted]
    if not chosen:
        raise ValidationError({"message": ["Choose the messages that make the new ticket."]})
    if len(chosen) == len(messages):
        raise ValidationError({"message": [f"Leave at least one message on {ticket.reference}."]})
    return chosen

"""Tickets as technicians work them: find, read, answer, note, change. Flush, never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.jobs import enqueue
from portal.mail.compose import AddressError, parse_addresses
from portal.models import Client, Mailbox, Message, Ticket, TicketLink, User
from portal.models.base import utcnow
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.services import ValidationError, audit
from portal.services.sending import SEND_OPTIONS, queue_mail

WORK_STATUSES = ("new", "open", "waiting", "resolved", "closed", "archived")


def get_ticket(msp_id: int, reference: str) -> Ticket | None:
    """The ticket with this reference in this MSP, else None (views answer 404)."""
    return db.session.scalar(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.reference == reference.upper()))


@dataclass
class TicketFilters:
    q: str = ""
    status: str = ""
    client_id: int | None = None
    priority: str = ""
    mailbox_id: int | None = None
    assignee_id: int | None = None
    new_information: bool = False
    errors: list[str] = field(default_factory=list)


def list_tickets(msp_id: int, filters: TicketFilters, *, page: int = 1, per_page: int = 50):
    """(tickets, total) for one page, newest activity first."""
    query = select(Ticket).where(Ticket.msp_id == msp_id)
    if filters.status:
        query = query.where(Ticket.status == filters.status)
    else:  # by default the work still to do
        query = query.where(Ticket.status.in_(("new", "open", "waiting")))
    if filters.client_id:
        query = query.where(Ticket.client_id == filters.client_id)
    if filters.priority:
        query = query.where(Ticket.priority == filters.priority)
    if filters.mailbox_id:
        query = query.where(Ticket.mailbox_id == filters.mailbox_id)
    if filters.assignee_id:
        query = query.where(Ticket.assignee_id == filters.assignee_id)
    if filters.new_information:
        query = query.where(Ticket.new_information.is_(True))
    if filters.q:
        like = f"%{filters.q.strip()}%"
        in_messages = select(Message.ticket_id).where(Message.msp_id == msp_id, Message.body_text.ilike(like))
        query = query.where(or_(Ticket.subject.ilike(like), Ticket.reference == filters.q.strip().upper(),
                                Ticket.id.in_(in_messages)))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.options(selectinload(Ticket.client), selectinload(Ticket.contact))
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total


def conversation(ticket: Ticket) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.ticket_id == ticket.id)
                                   .options(selectinload(Message.attachments)).order_by(Message.id)))


def linked_tickets(ticket: Ticket) -> list[tuple[str, Ticket]]:
    links = db.session.scalars(select(TicketLink).where(
        or_(TicketLink.ticket_id == ticket.id, TicketLink.linked_id == ticket.id)))
    return [(link.kind, link.linked if link.ticket_id == ticket.id else link.ticket) for link in links]


def reply_defaults(ticket: Ticket) -> tuple[list[str], list[str]]:
    """To and Cc for a reply: from the last email of the conversation, without our own addresses."""
    ours: set[str] = set()
    if ticket.mailbox_id:
        ours = {a.lower() for a in db.session.get(Mailbox, ticket.mailbox_id).addresses}
    last = db.session.scalar(select(Message).where(Message.ticket_id == ticket.id, Message.direction == "in")
                             .order_by(Message.id.desc()).limit(1))
    if last is None:
        return ([ticket.contact.email] if ticket.contact else []), list(ticket.cc)
    to = [last.from_address] if last.from_address else []
    cc = [p["address"] for p in (*last.to, *last.cc) if p["address"].lower() not in ours and p["address"] not in to]
    return to, cc


def _addresses(text: str, field_name: str, errors: dict) -> list[str]:
    """Addresses typed into a field, separated by commas, semicolons or new lines."""
    parts = [p.strip() for p in re.split(r"[,;\n]+", text or "") if p.strip()]
    try:
        return [a.addr_spec for a in parse_addresses(parts)]
    except AddressError as exc:
        errors.setdefault(field_name, []).append(f"{exc}.")
        return []


def change_status(ticket: Ticket, status: str, actor: User | None) -> bool:
    if status not in WORK_STATUSES:
        raise ValidationError({"status": [f"The status is one of {', '.join(WORK_STATUSES)}."]})
    if status == ticket.status:
        return False
    audit.record(actor, ticket.msp_id, "ticket", ticket.id, "status", {"status": [ticket.status, status]})
    ticket.status = status
    ticket.updated_at = utcnow()
    db.session.flush()
    return True


def reply(ticket: Ticket, author: User, *, to: str, cc: str, text: str, set_status: str = "") -> Message:
    """A technician's public reply: into the outbox (the reply template wraps the text)."""
    errors: dict[str, list[str]] = {}
    to_list = _addresses(to, "to", errors)
    cc_list = _addresses(cc, "cc", errors)
    if not to_list and "to" not in errors:
        errors["to"] = ["Send the reply to at least one address."]
    if not (text or "").strip():
        errors["text"] = ["Write the reply."]
    if set_status and set_status not in WORK_STATUSES:
        errors["set_status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if errors:
        raise ValidationError(errors)
    last_in = db.session.scalar(select(Message).where(Message.ticket_id == ticket.id, Message.message_id.is_not(None))
                                .order_by(Message.id.desc()).limit(1))
    thread = [*(last_in.references or []), last_in.message_id] if last_in else []
    message = queue_mail("reply", msp_id=ticket.msp_id, ticket=ticket, to=to_list, cc=cc_list, author_id=author.id,
                         in_reply_to=last_in.message_id if last_in else None, references=thread,
                         body_text=text.strip())
    message.from_name, message.from_address = author.name or author.email, author.email
    ticket.new_information = False
    ticket.updated_at = utcnow()
    if set_status:
        change_status(ticket, set_status, author)
    db.session.flush()
    enqueue("workers.outbound.send_due", options=SEND_OPTIONS)
    return message


def add_note(ticket: Ticket, author: User, text: str) -> Message:
    """An internal note: on the ticket, never emailed."""
    if not (text or "").strip():
        raise ValidationError({"note": ["Write the note."]})
    note = Message(msp_id=ticket.msp_id, ticket=ticket, direction="note", author_id=author.id,
                   from_name=author.name or author.email, from_address=author.email, body_text=text.strip())
    db.session.add(note)
    ticket.updated_at = utcnow()
    db.session.flush()
    return note


def mark_read(ticket: Ticket) -> None:
    if ticket.new_information:
        ticket.new_information = False
        db.session.flush()


def filter_choices(msp_id: int) -> dict:
    return {
        "clients": db.session.scalars(select(Client).where(Client.msp_id == msp_id).order_by(Client.name)).all(),
        "mailboxes": db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)).all(),
        "statuses": WORK_STATUSES,
        "priorities": PRIORITIES,
    }


__all__ = ["TICKET_STATUSES", "TicketFilters", "add_note", "change_status", "conversation", "get_ticket",
           "list_tickets", "reply", "reply_defaults"]

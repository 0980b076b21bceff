"""Tickets as technicians work them: find one, read its conversation and links, change its
fields (status, priority, assignee, type; on one ticket or many at once) with the history of those
changes. The list and its search are in ticket_list, replies and notes in ticket_replies. Flush,
never commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.mail import threads
from portal.models import Message, Ticket, TicketLink, User
from portal.models.base import utcnow
from portal.models.tickets import PRIORITIES
from portal.outbound.outbox import notify_contact
from portal.services import ValidationError, audit, sla, sla_alerts
from portal.services.custom_fields import type_problem

WORK_STATUSES = ("new", "open", "waiting", "resolved", "closed", "archived")


def get_ticket(msp_id: int, reference: str) -> Ticket | None:
    """The ticket with this reference in this MSP, else None (views answer 404)."""
    return db.session.scalar(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.reference == reference.upper()))


def conversation(ticket: Ticket) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.ticket_id == ticket.id)
                                   .options(selectinload(Message.attachments)).order_by(Message.id)))


def staff_mail(messages: Sequence[Message]) -> set[int]:
    """The ids of the messages on the staff's conversation (alerts to the on-call engineers and
    their answers by mail, portal.mail.threads), which the page shows apart from the customer's.
    Notes are neither; mail not sent yet has no Message-ID, and its event says where it goes."""
    mails = [threads.Mail(message_id=m.message_id, direction=m.direction, event=m.details.get("event"),
                          in_reply_to=m.in_reply_to, references=tuple(m.references or ()))
             for m in messages if m.message_id and m.direction in ("in", "out")]
    staff_ids = {m.message_id for m in threads.split_conversations(mails)[threads.STAFF]}
    return {m.id for m in messages if (m.message_id in staff_ids if m.message_id else
                                       m.direction == "out" and m.details.get("event") not in threads.CUSTOMER_EVENTS)}


def linked_tickets(ticket: Ticket) -> list[tuple[str, Ticket]]:
    links = db.session.scalars(select(TicketLink).where(
        or_(TicketLink.ticket_id == ticket.id, TicketLink.linked_id == ticket.id)))
    return [(link.kind, link.linked if link.ticket_id == ticket.id else link.ticket) for link in links]


def mark_read(ticket: Ticket) -> None:
    if ticket.new_information:
        ticket.new_information = False
        db.session.flush()


# --- the fields a technician sets: priority, assignee, type; on one ticket or many at once -------

TYPE_MAX = 60


def assignable_users(msp_id: int) -> list[User]:
    """Who may be given tickets: the MSP's admins and technicians who can sign in."""
    return list(db.session.scalars(select(User).where(User.msp_id == msp_id, User.disabled.is_(False))
                                   .order_by(func.lower(User.name), User.email)))


def get_assignable(msp_id: int, user_id: int | None) -> User | None:
    if user_id is None:
        return None
    return db.session.scalar(select(User).where(User.id == user_id, User.msp_id == msp_id,
                                                User.disabled.is_(False)))


def assignee_of(ticket: Ticket) -> User | None:
    return db.session.get(User, ticket.assignee_id) if ticket.assignee_id else None


def _person(user: User | None) -> str | None:
    # The history keeps the name as it was, so it still reads right after the user is renamed.
    return (user.name or user.email) if user else None


@dataclass(frozen=True)
class _Field:
    """How one of the ticket's own fields changes: the value as stored (or a ValidationError),
    how the history shows a value, and the email the contact gets for the change (if any)."""

    column: str
    action: str  # the history entry's action
    clean: Callable[[Ticket, Any], Any]
    shown: Callable[[Any], Any] = lambda value: value
    event: Callable[[Any, Any], str | None] = lambda old, new: None


def _valid_status(ticket: Ticket, status: str) -> str:
    if status not in WORK_STATUSES:
        raise ValidationError({"status": [f"The status is one of {', '.join(WORK_STATUSES)}."]})
    return status


def _status_event(old: str, new: str) -> str | None:
    if new == "closed":
        return "closed"
    return "reopened" if old in ("resolved", "closed") and new in ("new", "open", "waiting") else None


def _valid_priority(ticket: Ticket, priority: str) -> str:
    if priority not in PRIORITIES:
        raise ValidationError({"priority": [f"The priority is one of {', '.join(PRIORITIES)}."]})
    return priority


def _valid_assignee(ticket: Ticket, assignee: User | None) -> int | None:
    """A user of the ticket's MSP, or nobody (None); the one it already has may since be disabled."""
    if assignee is not None and assignee.id != ticket.assignee_id and (
            assignee.msp_id != ticket.msp_id or assignee.disabled):
        raise ValidationError({"assignee": ["Choose an active user of your MSP, or nobody."]})
    return assignee.id if assignee else None


def _valid_type(ticket: Ticket, type_: str | None) -> str | None:
    value = " ".join((type_ or "").split()) or None
    if value and len(value) > TYPE_MAX:
        raise ValidationError({"type": [f"The type is at most {TYPE_MAX} characters."]})
    return value


_FIELDS = {
    "status": _Field("status", "status", _valid_status, event=_status_event),
    "priority": _Field("priority", "priority", _valid_priority, event=lambda old, new: "priority_changed"),
    "assignee": _Field("assignee_id", "assigned", _valid_assignee,
                       shown=lambda user_id: _person(db.session.get(User, user_id) if user_id else None),
                       event=lambda old, new: "owner_changed"),
    "type": _Field("type", "type", _valid_type),
}


def _set(name: str, ticket: Ticket, value) -> tuple[Any, Any] | None:
    """Set one of the ticket's fields, telling the contact if the mail settings say so;
    (old, new) as the history shows them, or None if it already had that value."""
    rule = _FIELDS[name]
    new = rule.clean(ticket, value)
    old = getattr(ticket, rule.column)
    if new == old:
        return None
    setattr(ticket, rule.column, new)
    ticket.updated_at = utcnow()
    if name == "status":
        sla.status_changed(ticket, old, new)
    elif name == "priority":
        before = sla_alerts.due_times(ticket)
        sla.recompute(ticket)
        sla_alerts.sla_changed(ticket, before)
    if event := rule.event(old, new):
        notify_contact(event, ticket)
    return rule.shown(old), rule.shown(new)


def _apply(ticket: Ticket, wanted: dict[str, Any], actor: User | None) -> list[str]:
    """Set these of the ticket's fields (status, priority, assignee, type) as one change: one
    history entry naming every field that changed (the contact is told of each as the mail
    settings say). Returns the fields that changed."""
    changes: dict[str, list] = {}
    for name in ("status", "priority", "assignee", "type"):
        if name in wanted and (changed := _set(name, ticket, wanted[name])) is not None:
            changes[name] = list(changed)
    if changes:
        action = _FIELDS[next(iter(changes))].action if len(changes) == 1 else "changed"
        audit.record(actor, ticket.msp_id, "ticket", ticket.id, action, changes)
        db.session.flush()
    return list(changes)


def change(name: str, ticket: Ticket, value, actor: User | None) -> bool:
    """Set one of the ticket's fields (status, priority, assignee, type); False if it already
    had that value. Each change is in the ticket's history and may tell the contact."""
    return bool(_apply(ticket, {name: value}, actor))


change_status = partial(change, "status")
change_priority = partial(change, "priority")
change_assignee = partial(change, "assignee")  # a User, or None for nobody


TYPES_OFFERED = 100
# From each type to the next through ix_tickets_msp_type, one probe each, rather than DISTINCT
# over every ticket of the MSP (125 ms a ticket page at 1,000,000 tickets).
_TYPES_IN_USE = text("""
    WITH RECURSIVE used(type, n) AS (
        SELECT min(type), 1 FROM tickets WHERE msp_id = :msp_id AND type IS NOT NULL
        UNION ALL
        SELECT (SELECT min(type) FROM tickets WHERE msp_id = :msp_id AND type > used.type), n + 1
        FROM used WHERE used.type IS NOT NULL AND n < :most
    )
    SELECT type FROM used WHERE type IS NOT NULL ORDER BY n""")


def types_in_use(msp_id: int) -> list[str]:
    """Ticket types the MSP already uses (the first TYPES_OFFERED in order), offered as suggestions."""
    return list(db.session.scalars(_TYPES_IN_USE, {"msp_id": msp_id, "most": TYPES_OFFERED}))


def _record_id(text: str) -> int | None:
    """A posted id as a number the database can hold, else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


@dataclass
class FieldsInput:
    """The ticket page's fields as posted; assignee: a user id, or "" for nobody; status: ""
    leaves it as it is."""

    priority: str
    assignee: str = ""
    type: str = ""
    status: str = ""


def update_fields(ticket: Ticket, data: FieldsInput, actor: User | None) -> list[str]:
    """Apply what changed as one change: one history entry naming every field that changed
    (the contact is told of each as the mail settings say). Returns the changed fields; nothing
    is applied unless every field is valid."""
    errors: dict[str, list[str]] = {}
    if data.status and data.status not in WORK_STATUSES:
        errors["status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if data.priority not in PRIORITIES:
        errors["priority"] = [f"The priority is one of {', '.join(PRIORITIES)}."]
    assignee_id = _record_id(data.assignee) if data.assignee else None
    assignee = get_assignable(ticket.msp_id, assignee_id)
    if data.assignee and assignee is None and (assignee_id is None or assignee_id != ticket.assignee_id):
        errors["assignee"] = ["Choose an active user of your MSP, or nobody."]
    if len(" ".join((data.type or "").split())) > TYPE_MAX:
        errors["type"] = [f"The type is at most {TYPE_MAX} characters."]
    elif " ".join((data.type or "").split()) != (ticket.type or "") and (
            problem := type_problem(ticket.msp_id, " ".join((data.type or "").split()))):
        errors["type"] = [problem]
    if errors:
        raise ValidationError(errors)
    wanted = {"status": data.status or ticket.status, "priority": data.priority, "type": data.type}
    # A ticket kept with a user who was disabled since stays theirs until someone else takes it.
    if assignee_id != ticket.assignee_id:
        wanted["assignee"] = assignee
    return _apply(ticket, wanted, actor)


def ticket_changes(ticket: Ticket, *, page: int = 1, per_page: int = 20):
    """The ticket's history of changes (status, priority, assignee, type), newest first: (entries, total)."""
    return audit.history(ticket.msp_id, "ticket", ticket.id, page=page, per_page=per_page)


UNASSIGN = "none"


@dataclass
class BulkChange:
    """What to do with the selected tickets; "" leaves a field as it is.
    assignee: a user id, or UNASSIGN."""

    status: str = ""
    priority: str = ""
    assignee: str = ""


@dataclass
class BulkResult:
    updated: list[Ticket] = field(default_factory=list)
    unchanged: list[Ticket] = field(default_factory=list)
    # Selected ids that are no ticket of this MSP: left alone, and said so.
    ignored: list[str] = field(default_factory=list)


BULK_MAX = 500


def bulk_update(msp_id: int, ids: Sequence[str], change: BulkChange, actor: User | None) -> BulkResult:
    """The same change on many tickets, each through the single-ticket path (one history entry
    per ticket, as its page writes it).
    Only tickets of this MSP are touched; anything else selected is reported, not an error."""
    errors: dict[str, list[str]] = {}
    wanted: list[int] = []
    result = BulkResult()
    for raw in dict.fromkeys(str(i).strip() for i in ids if str(i).strip()):
        if (number := _record_id(raw)) is not None:
            wanted.append(number)
        else:
            result.ignored.append(raw[:40])
    if not wanted and not result.ignored:
        errors["ticket"] = ["Select at least one ticket."]
    elif len(wanted) > BULK_MAX:
        errors["ticket"] = [f"Select at most {BULK_MAX} tickets at once."]
    if not (change.status or change.priority or change.assignee):
        errors["change"] = ["Choose a status, an assignee or a priority to set."]
    if change.status and change.status not in WORK_STATUSES:
        errors["status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if change.priority and change.priority not in PRIORITIES:
        errors["priority"] = [f"The priority is one of {', '.join(PRIORITIES)}."]
    assignee = None
    if change.assignee and change.assignee != UNASSIGN:
        assignee = get_assignable(msp_id, _record_id(change.assignee))
        if assignee is None:
            errors["assignee"] = ["Choose an active user of your MSP, or nobody."]
    if errors:
        raise ValidationError(errors)
    tickets = db.session.scalars(select(Ticket).where(Ticket.msp_id == msp_id, Ticket.id.in_(wanted))
                                 .order_by(Ticket.id)).all() if wanted else []
    found = {t.id for t in tickets}
    result.ignored += [str(i) for i in wanted if i not in found]
    wanted = {name: value for name, value in (("status", change.status), ("priority", change.priority)) if value}
    if change.assignee:
        wanted["assignee"] = assignee
    for ticket in tickets:
        (result.updated if _apply(ticket, wanted, actor) else result.unchanged).append(ticket)
    return result

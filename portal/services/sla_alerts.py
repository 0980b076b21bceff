"""Service-level mail: `sla_warning` and `sla_breached` to the staff (the ticket's assignee and its
mailbox's alert recipients) when a clock reaches its warning share or its due time, and
`sla_changed` to the customer when a ticket's due times move.

Each threshold goes out once: it is added to the ticket's `sla_sent` in the same transaction
that puts its mail in the outbox, and the rows are claimed first (PostgreSQL: FOR UPDATE SKIP
LOCKED, so a second run passes them by; SQLite: a write, which takes the database's single write
lock before the rows are read again), so a crash or a second scheduler cannot send it twice.
Flush, never commit: the job (workers.maintenance.alert_service_levels) commits each batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from portal.extensions import db
from portal.models import Mailbox, Message, SlaPolicy, Ticket, User
from portal.outbound.outbox import notify_contact, queue_mail
from portal.services.sla import clock_policy
from portal.sla import clock
from portal.sla.clock import Policy

log = logging.getLogger(__name__)

BATCH = 200  # tickets per claim: each batch is its own short transaction
# Only tickets someone still works on; a resolved ticket's unanswered response clock stays quiet.
WORKED_ON = ("new", "open", "waiting")
CLOCK_WORDS = {"response": "first response", "resolution": "resolution"}

# A ticket with a policy and a clock that runs (started, not paused, a due time, not stopped).
RUNNING = and_(
    Ticket.sla_policy_id.is_not(None), Ticket.sla_started_at.is_not(None), Ticket.sla_paused_at.is_(None),
    Ticket.status.in_(WORKED_ON),
    or_(and_(Ticket.first_response_due_at.is_not(None), Ticket.first_response_at.is_(None)),
        and_(Ticket.resolution_due_at.is_not(None), Ticket.resolved_at.is_(None))))


def due_times(ticket: Ticket) -> tuple[datetime | None, datetime | None]:
    """(first response due, resolution due): what sla_changed compares against."""
    return ticket.first_response_due_at, ticket.resolution_due_at


def candidate_batches(now: datetime, size: int = BATCH) -> Iterator[tuple[int, list[int]]]:
    """(MSP id, ticket ids) of the tickets whose clocks run, a bounded batch at a time per MSP.
    Safe to commit between batches: it keeps only the last id it saw."""
    for msp_id in list(db.session.scalars(select(Ticket.msp_id).where(RUNNING).distinct())):
        after = 0
        while True:
            ids = list(db.session.scalars(select(Ticket.id).where(Ticket.msp_id == msp_id, RUNNING, Ticket.id > after)
                                          .order_by(Ticket.id).limit(size)))
            if not ids:
                break
            after = ids[-1]
            yield msp_id, ids


def _claim(msp_id: int, ids: list[int]) -> list[Ticket]:
    """The batch's tickets, read again under a claim that lasts until the commit."""
    query = (select(Ticket).where(Ticket.msp_id == msp_id, Ticket.id.in_(ids), RUNNING)
             .order_by(Ticket.id).execution_options(populate_existing=True))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Ticket)
    else:
        db.session.execute(update(Ticket.__table__).where(Ticket.__table__.c.id.in_(ids))
                           .values(id=Ticket.__table__.c.id))
    return list(db.session.scalars(query))


def alert_batch(msp_id: int, ids: list[int], now: datetime) -> list[Message]:
    """Queue the warnings and breaches due by `now` on these tickets of one MSP, each once."""
    tickets = _claim(msp_id, ids)
    if not tickets:
        return []
    policies: dict[int, Policy | None] = {}
    for row in db.session.scalars(select(SlaPolicy).where(SlaPolicy.msp_id == msp_id,
                                                          SlaPolicy.id.in_({t.sla_policy_id for t in tickets}))):
        policies[row.id] = clock_policy(row)  # None: a hand-edited row that no longer reads
    assignees = {u.id: u for u in db.session.scalars(select(User).where(
        User.msp_id == msp_id, User.id.in_({t.assignee_id for t in tickets if t.assignee_id})))}
    mailboxes = {m.id: m for m in db.session.scalars(select(Mailbox).where(
        Mailbox.msp_id == msp_id, Mailbox.id.in_({t.mailbox_id for t in tickets if t.mailbox_id})))}
    queued = []
    for ticket in tickets:
        policy = policies.get(ticket.sla_policy_id)
        reached = clock.thresholds_reached(ticket, policy, now) if policy else []
        if not reached:
            continue
        to = _staff(assignees.get(ticket.assignee_id), mailboxes.get(ticket.mailbox_id))
        for threshold in reached:
            if to:
                event = "sla_breached" if threshold.endswith("_breached") else "sla_warning"
                queued.append(queue_mail(event, msp_id=msp_id, ticket=ticket, mailbox=mailboxes.get(ticket.mailbox_id),
                                         to=to, details={"sla": threshold}))
        # Recorded even with nobody to tell: a late warning, once recipients are added, helps nobody.
        ticket.sla_sent = [*(ticket.sla_sent or []), *reached]
    db.session.flush()
    return queued


def _staff(assignee: User | None, mailbox: Mailbox | None) -> list[str]:
    found = [assignee.email] if assignee is not None and not assignee.disabled else []
    for address in (mailbox.alert_recipients if mailbox is not None else None) or ():
        if address.lower() not in {a.lower() for a in found}:
            found.append(address)
    return found


def sla_changed(ticket: Ticket, before: tuple[datetime | None, datetime | None]) -> Message | None:
    """Tell the customer their ticket's new due times, when a running clock's due time moved
    and the customer notifications include `sla_changed`. Call it after clock.recompute() where
    the priority or the policy of a ticket changes (a person's action), with due_times(ticket)
    taken before the recompute."""
    after = due_times(ticket)
    running = (ticket.first_response_at is None, ticket.resolved_at is None)
    if not any(on and old != new for on, old, new in zip(running, before, after, strict=True)):
        return None
    return notify_contact("sla_changed", ticket)


def template_values(ticket: Ticket, details: dict) -> dict:
    """What an SLA mail's template reads as sla.<name> (portal.mail.render.VARIABLES)."""
    policy = db.session.get(SlaPolicy, ticket.sla_policy_id) if ticket.sla_policy_id else None
    values = {"policy": policy.name if policy else "", "response_due": ticket.first_response_due_at,
              "resolution_due": ticket.resolution_due_at}
    threshold = details.get("sla") or ""
    which = threshold.partition("_")[0]
    if which in CLOCK_WORDS:
        values["clock"] = CLOCK_WORDS[which]
        values["due"] = ticket.first_response_due_at if which == "response" else ticket.resolution_due_at
        values["share"] = policy.warning_percent if policy else None
    return values

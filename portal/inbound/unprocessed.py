"""Unprocessed mail: inbound email that no route or allow-list could place, and mail whose
processing failed after its tries. A person assigns it, appends it to a ticket, teaches the
allow-list, runs it through the decision again (portal.inbound.replay), or discards it
(undoable for 30 days).

Discarding needs no column of its own: the message's outcome becomes "discarded" (what it was
is kept in its details) and the audit entry of the discard says when, which is what the
30-day window counts from. Flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from portal import tenancy
from portal.extensions import db
from portal.inbound.context import AllowLists, IngestContext
from portal.inbound.decide import IngestResult, place
from portal.inbound.replay import Outcome, Pipeline, attempt, context_for, replay
from portal.mail.parse import HEADER_READ_LIMIT, parse_headers
from portal.models import AllowEntry, AuditEntry, Client, Mailbox, Message, RawMessage, Ticket, User
from portal.models.base import utcnow
from portal.services import ValidationError, audit
from portal.services.allowlist import AllowEntryError, normalise_address, normalise_domain
from portal.services.clients import snapshot

UNPROCESSED = "unprocessed"
DISCARDED = "discarded"
UNDO_DAYS = 30
RECORD = "message"  # audit record type


# --- queries -------------------------------------------------------------------------------------


def _waiting(msp_id: int):
    return select(Message).where(Message.msp_id == msp_id, Message.direction == "in", Message.outcome == UNPROCESSED)


def _discarded_recently(msp_id: int):
    cutoff = utcnow() - timedelta(days=UNDO_DAYS)
    recent = select(AuditEntry.record_id).where(
        AuditEntry.msp_id == msp_id, AuditEntry.record_type == RECORD, AuditEntry.action == "discarded",
        AuditEntry.at >= cutoff)
    return select(Message).where(Message.msp_id == msp_id, Message.direction == "in", Message.outcome == DISCARDED,
                                 Message.id.in_(recent))


def count_waiting(msp_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(_waiting(msp_id).subquery())) or 0


def count_discarded(msp_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(_discarded_recently(msp_id).subquery())) or 0


@dataclass
class Row:
    """One unprocessed email as a person reads it."""

    message: Message
    sender: str
    to: str
    subject: str
    mailbox: Mailbox | None
    received: datetime
    why: str
    failed: bool
    discarded_at: datetime | None = None
    discarded_by: str = ""


def list_mail(msp_id: int, *, discarded: bool = False, page: int = 1, per_page: int = 50) -> tuple[list[Row], int]:
    """(rows, total) for one page, newest first."""
    query = _discarded_recently(msp_id) if discarded else _waiting(msp_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    messages = db.session.scalars(query.options(selectinload(Message.raw_message))
                                  .order_by(Message.id.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    return rows_for(msp_id, messages), total


def rows_for(msp_id: int, messages: list[Message]) -> list[Row]:
    mailboxes = {m.id: m for m in db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id))}
    discards = _last_discards(msp_id, [m.id for m in messages if m.outcome == DISCARDED])
    rows = []
    for m in messages:
        sender, to, subject = _envelope(m)
        stored = m.raw_message
        entry = discards.get(m.id)
        rows.append(Row(m, sender, to, subject, mailboxes.get(m.mailbox_id),
                        stored.fetched_at if stored else m.created_at, why(m),
                        bool(stored and stored.state == "failed"),
                        entry.at if entry else None, entry.actor_label if entry else ""))
    return rows


def _last_discards(msp_id: int, ids: list[int]) -> dict[int, AuditEntry]:
    if not ids:
        return {}
    found: dict[int, AuditEntry] = {}
    for entry in db.session.scalars(select(AuditEntry).where(
            AuditEntry.msp_id == msp_id, AuditEntry.record_type == RECORD, AuditEntry.action == "discarded",
            AuditEntry.record_id.in_(ids)).order_by(AuditEntry.at, AuditEntry.id)):
        found[entry.record_id] = entry  # the latest wins
    return found


def _envelope(message: Message) -> tuple[str, str, str]:
    """From, To and Subject. Mail that failed before it was read has none stored: its headers
    are read from the kept bytes for display."""
    to = ", ".join(p["address"] for p in (message.to or []))
    if message.from_address or message.subject or to:
        return message.from_address, to, message.subject
    stored = message.raw_message
    if stored is None or stored.raw is None:
        return "", "", ""
    head = parse_headers(stored.raw[:HEADER_READ_LIMIT], stored.size)
    return (head.from_.address if head.from_ else ""), ", ".join(a.address for a in head.to), head.subject


def why(message: Message) -> str:
    """The reason in a line: the error of a failed message, else the trace's last line."""
    stored = message.raw_message
    if stored is not None and stored.state == "failed" and stored.last_error:
        return f"processing failed after {stored.tries} tries: {stored.last_error}"
    trace = message.trace or []
    return trace[-1] if trace else "no reason was recorded"


def get_mail(msp_id: int, message_id: int) -> Message | None:
    """An unprocessed or discarded inbound email of this MSP, else None (views answer 404)."""
    return db.session.scalar(select(Message).where(
        Message.id == message_id, Message.msp_id == msp_id, Message.direction == "in",
        Message.outcome.in_((UNPROCESSED, DISCARDED))))


def detail(msp_id: int, message: Message) -> Row:
    return rows_for(msp_id, [message])[0]


def undo_until(message: Message) -> datetime | None:
    """Until when a discard can be undone; None if the message is not discarded (or too long ago)."""
    entry = _last_discards(message.msp_id, [message.id]).get(message.id)
    if message.outcome != DISCARDED or entry is None:
        return None
    until = entry.at + timedelta(days=UNDO_DAYS)
    return until if until > utcnow() else None


def choices(msp_id: int) -> list[Client]:
    return list(db.session.scalars(select(Client).where(Client.msp_id == msp_id, Client.disabled.is_(False))
                                   .order_by(Client.name)))


# --- deciding again ------------------------------------------------------------------------------


def _actor_name(actor: User | None) -> str:
    return actor.email if actor else "the command line"


def rerun(message: Message, actor: User | None, pipeline: Pipeline) -> Outcome:
    """Decide again with the configuration as it is now."""
    _require(message, UNPROCESSED)
    ctx = context_for(message.raw_message, pipeline)
    outcome = attempt(message, ctx, lambda stored: replay(stored, ctx))
    _record_result(actor, message, "re-run", outcome)
    return outcome


def assign(message: Message, client: Client | None, actor: User | None, pipeline: Pipeline) -> Outcome:
    """A new ticket for this client from this email, made as a routed email's would be."""
    _require(message, UNPROCESSED)
    if client is None or client.msp_id != message.msp_id:
        raise ValidationError({"client_id": ["Choose one of your clients."]})
    if client.disabled:
        raise ValidationError({"client_id": [f"{client.name} is disabled; choose another client."]})
    _require_content(message)
    ctx = context_for(message.raw_message, pipeline)
    note = f"assigned by {_actor_name(actor)} to {client.name}"
    outcome = attempt(message, ctx, lambda stored: place(stored, ctx, note, client_id=client.id))
    if outcome.error:
        raise ValidationError({"": [f"The email could not be assigned: {outcome.error}"]})
    _record_result(actor, message, "assigned", outcome)
    return outcome


def append(message: Message, reference: str, actor: User | None, pipeline: Pipeline) -> Outcome:
    """Onto an existing ticket, as if the email had threaded there (status rules apply)."""
    _require(message, UNPROCESSED)
    reference = (reference or "").strip().upper()
    if not reference:
        raise ValidationError({"reference": ["Type the ticket's reference, e.g. T-1042."]})
    ticket = db.session.scalar(select(Ticket).where(Ticket.msp_id == message.msp_id, Ticket.reference == reference))
    if ticket is None:
        raise ValidationError({"reference": [f"There is no ticket {reference}."]})
    _require_content(message)
    ctx = context_for(message.raw_message, pipeline)
    note = f"appended by {_actor_name(actor)} to {ticket.reference}"
    outcome = attempt(message, ctx, lambda stored: place(stored, ctx, note, ticket=ticket))
    if outcome.error:
        raise ValidationError({"": [f"The email could not be appended: {outcome.error}"]})
    _record_result(actor, message, "appended", outcome)
    return outcome


def _require(message: Message, outcome: str) -> None:
    if message.outcome != outcome:
        raise ValidationError({"": ["This email is no longer waiting; it was placed or discarded meanwhile."]
                               if outcome == UNPROCESSED else ["This email is not discarded."]})


def _require_content(message: Message) -> None:
    if message.raw_message is None or message.raw_message.raw is None:
        raise ValidationError({"": ["This email was kept without its content (it was over the size limit), "
                                    "so there is nothing to make a ticket from. Discard it instead."]})


def _record_result(actor: User | None, message: Message, action: str, outcome: Outcome) -> None:
    changes: dict[str, list] = {"outcome": [UNPROCESSED, outcome.result.outcome if outcome.result else "failed"]}
    if outcome.ticket is not None:
        changes["ticket"] = [None, outcome.ticket.reference]
    if outcome.error:
        changes["error"] = [None, outcome.error]
    audit.record(actor, message.msp_id, RECORD, message.id, action, changes)


# --- teaching the allow-list ---------------------------------------------------------------------


@dataclass
class Lesson:
    value: str  # the address or domain added
    client: Client
    added: bool  # False: it was on this client's list already
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def placed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.placed]


def sender_entry(message: Message, scope: str) -> str:
    """The allow-list value teaching would add: the sender's address or its domain, normalised."""
    sender = (_envelope(message)[0] or "").strip().lower()
    if "@" not in sender:
        raise ValidationError({"scope": ["The sender of this email is unknown, so there is nothing to teach."]})
    try:
        if scope == "address":
            return normalise_address(sender)
        if scope == "domain":
            return normalise_domain(sender.rpartition("@")[2])
    except AllowEntryError as exc:
        raise ValidationError({"scope": [f"The sender cannot go on an allow-list: {exc}."]}) from None
    raise ValidationError({"scope": ["Choose the sender's address or its whole domain."]})


def same_sender(msp_id: int, value: str) -> list[Message]:
    """Waiting mail from this address, or from this domain and its subdomains."""
    sender = func.lower(Message.from_address)
    if "@" in value:
        match = sender == value
    else:
        match = or_(sender.like(f"%@{value}"), sender.like(f"%.{value}"))
    return list(db.session.scalars(_waiting(msp_id).where(match).options(selectinload(Message.raw_message))
                                   .order_by(Message.id)))


def teach(message: Message, client: Client | None, scope: str, actor: User | None, pipeline: Pipeline) -> Lesson:
    """Put the sender (address or domain) on the client's allow-list, then decide this email and
    every other waiting one from the same sender again. Where routing still leaves one
    unprocessed, the allow-list places it: a person said where this sender's mail belongs."""
    _require(message, UNPROCESSED)
    if client is None or client.msp_id != message.msp_id:
        raise ValidationError({"client_id": ["Choose one of your clients."]})
    if client.disabled:
        raise ValidationError({"client_id": [f"{client.name} is disabled; choose another client."]})
    value = sender_entry(message, scope)
    lesson = Lesson(value, client, added=_add_to_allow_list(client, value, actor))
    candidates = same_sender(message.msp_id, value)
    if message not in candidates:
        candidates.insert(0, message)
    for m in sorted(candidates, key=lambda m: (m.mailbox_id or 0, m.id)):
        if m.raw_message is None or m.raw_message.mailbox is None:
            continue
        ctx = context_for(m.raw_message, pipeline)
        outcome = attempt(m, ctx, lambda stored, ctx=ctx: _decide_or_place(stored, ctx, actor))
        lesson.outcomes.append(outcome)
        _record_result(actor, m, "taught", outcome)
    return lesson


def _decide_or_place(stored: RawMessage, ctx: IngestContext, actor: User | None) -> IngestResult:
    result = replay(stored, ctx)
    if result.outcome != UNPROCESSED or stored.raw is None:
        return result
    found = allow_listed(ctx, result.message.from_address)
    if found is None:
        return result
    client_id, entry = found
    note = (f"taught by {_actor_name(actor)}: {entry} is on the allow-list of {ctx.clients[client_id].name}, "
            "so this sender's mail belongs there")
    return place(stored, ctx, note, client_id=client_id)


def allow_listed(ctx: IngestContext | AllowLists, sender: str) -> tuple[int, str] | None:
    """(client id, entry) for the allow-list entry in the mailbox's tree that claims this sender:
    the address first, then the most specific domain."""
    return tenancy.allow_list_match((sender or "").lower(), ctx.allowed_addresses, ctx.allowed_domains)


def _add_to_allow_list(client: Client, value: str, actor: User | None) -> bool:
    """Add one entry, audited on the client like an edit. False if it was there already."""
    owner = db.session.execute(select(AllowEntry.client_id, Client.name).join(Client, AllowEntry.client_id == Client.id)
                               .where(AllowEntry.msp_id == client.msp_id, AllowEntry.value == value)).first()
    if owner is not None and owner.client_id == client.id:
        return False
    if owner is not None:
        # Two clients claiming one sender would make routing depend on chance.
        raise ValidationError({"client_id": [f"{value} is already on the allow-list of {owner.name}."]})
    before = snapshot(client)
    client.allow_entries.append(AllowEntry(msp_id=client.msp_id, kind="address" if "@" in value else "domain",
                                           value=value))
    db.session.flush()
    audit.record(actor, client.msp_id, "client", client.id, "updated", audit.diff(before, snapshot(client)))
    return True


# --- discarding ----------------------------------------------------------------------------------


def discard(message: Message, actor: User | None) -> None:
    _require(message, UNPROCESSED)
    message.outcome = DISCARDED
    message.details = {**(message.details or {}), "discarded_from": UNPROCESSED}
    audit.record(actor, message.msp_id, RECORD, message.id, "discarded", {"outcome": [UNPROCESSED, DISCARDED]})
    db.session.flush()


def restore(message: Message, actor: User | None) -> None:
    _require(message, DISCARDED)
    if undo_until(message) is None:
        raise ValidationError({"": [f"It was discarded more than {UNDO_DAYS} days ago and can no longer be restored."]})
    details = dict(message.details or {})
    message.outcome = details.pop("discarded_from", UNPROCESSED)
    message.details = details
    audit.record(actor, message.msp_id, RECORD, message.id, "restored", {"outcome": [DISCARDED, message.outcome]})
    db.session.flush()

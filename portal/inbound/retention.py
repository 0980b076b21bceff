"""How long an MSP keeps mail as it was fetched: after `retention_raw_days` the raw bytes of the
mail on closed tickets (and the original .eml a mailbox attached to them) go, after
`retention_unprocessed_days` those of discarded unprocessed mail. Both are read on the MSP root
and off (None) by default. The tickets keep their messages: their text, HTML and the files that
came with them stay; only the copy as fetched goes. The RawMessage row itself stays too, so that
a mailbox that leaves its mail on the server does not fetch it again.

The scheduler runs purge_all() every hour; each run does a bounded amount of work per MSP and
kind, so a first run over years of mail is spread over several hours. Flush, never commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update

from portal.extensions import db
from portal.inbound.unprocessed import DISCARDED, RECORD, UNDO_DAYS
from portal.models import Attachment, AuditEntry, Client, Message, RawMessage, Ticket, User
from portal.models.base import utcnow
from portal.services import ValidationError, audit

log = logging.getLogger(__name__)

RETENTION_KEYS = ("retention_raw_days", "retention_unprocessed_days")
# Tickets whose raw mail may go: closed, or archived after closing. Their last change counts as
# the day they closed (a ticket that changes again starts its days again).
CLOSED = ("closed", "archived")
# The original email a mailbox attaches to new tickets (portal.inbound.tickets, keep_raw_attachment).
RAW_ATTACHMENT = ("original.eml", "message/rfc822")
MAX_DAYS = 3650
# Per MSP, per kind and per run: the hourly run catches up over several hours.
PURGE_BATCH = 500
PURGED = "purged old mail"
WHO = "retention"  # who the history names
LABELS = {"raw": "raw mail of closed tickets", "eml": "original emails attached to closed tickets",
          "discarded": "discarded unprocessed mail"}


def save_retention(msp: Client, values: dict, actor: User | None) -> dict:
    """Set an MSP's two retention periods (a number of days, or None / "" for off); returns the
    audited changes. The unprocessed mail's period is at least the 30 days a discard can be undone."""
    errors: dict[str, list[str]] = {}
    clean: dict[str, int | None] = {}
    least = {"retention_raw_days": 1, "retention_unprocessed_days": UNDO_DAYS}
    for key in RETENTION_KEYS:
        if key not in values:
            continue
        value = values[key]
        if value in (None, ""):
            clean[key] = None
        elif isinstance(value, int) and not isinstance(value, bool) and least[key] <= value <= MAX_DAYS:
            clean[key] = value
        else:
            errors[key] = [f"A number of days from {least[key]} to {MAX_DAYS}, or empty to keep it for ever."]
    if errors:
        raise ValidationError(errors)
    changes = {k: [getattr(msp, k), v] for k, v in clean.items() if getattr(msp, k) != v}
    for key, (_old, new) in changes.items():
        setattr(msp, key, new)
    if changes:
        audit.record(actor, msp.id, "client", msp.id, "retention changed", changes)
    db.session.flush()
    return changes


@dataclass
class Purged:
    raw: int = 0
    eml: int = 0
    discarded: int = 0

    @property
    def total(self) -> int:
        return self.raw + self.eml + self.discarded


def purge_all(now: datetime | None = None, batch: int = PURGE_BATCH) -> dict[int, Purged]:
    """Every MSP with a retention period: what went, by MSP id (only MSPs where something did)."""
    now = now or utcnow()
    done: dict[int, Purged] = {}
    msps = db.session.scalars(select(Client).where(
        Client.parent_id.is_(None),
        Client.retention_raw_days.is_not(None) | Client.retention_unprocessed_days.is_not(None)).order_by(Client.id))
    for msp in msps.all():
        purged = purge_msp(msp, now, batch)
        if purged.total:
            done[msp.id] = purged
    return done


def purge_msp(msp: Client, now: datetime, batch: int = PURGE_BATCH) -> Purged:
    """One MSP's raw mail past its retention, at most `batch` of each kind; the history says what went."""
    purged = Purged()
    if msp.retention_raw_days:
        cutoff = now - timedelta(days=msp.retention_raw_days)
        purged.raw = _drop_raw(_closed_raw(msp.id, cutoff), batch)
        purged.eml = _drop_raw_attachments(msp.id, cutoff, batch)
    if msp.retention_unprocessed_days:
        purged.discarded = _drop_raw(_discarded_raw(msp.id, now - timedelta(days=msp.retention_unprocessed_days)),
                                     batch)
    if purged.total:
        counts = {LABELS[k]: [None, n] for k, n in vars(purged).items() if n}
        audit.record(None, msp.id, "client", msp.id, PURGED, counts, label=WHO)
        log.info("retention: %s: removed %s", msp.name, ", ".join(f"{n} {k}" for k, (_, n) in counts.items()))
    db.session.flush()
    return purged


def _on_closed_tickets(msp_id: int, cutoff: datetime):
    return select(Message.id).join(Ticket, Ticket.id == Message.ticket_id).where(
        Message.msp_id == msp_id, Ticket.msp_id == msp_id, Ticket.status.in_(CLOSED), Ticket.updated_at <= cutoff)


def _closed_raw(msp_id: int, cutoff: datetime):
    return select(RawMessage.id).join(Message, Message.raw_message_id == RawMessage.id).where(
        RawMessage.msp_id == msp_id, RawMessage.raw.is_not(None),
        Message.id.in_(_on_closed_tickets(msp_id, cutoff)))


def _discarded_raw(msp_id: int, cutoff: datetime):
    """Discarded before the cutoff, and not discarded again since (restored, then discarded anew)."""
    discards = select(AuditEntry.record_id).where(
        AuditEntry.msp_id == msp_id, AuditEntry.record_type == RECORD, AuditEntry.action == "discarded")
    recent = exists(discards.where(AuditEntry.at > cutoff, AuditEntry.record_id == Message.id))
    return select(RawMessage.id).join(Message, Message.raw_message_id == RawMessage.id).where(
        RawMessage.msp_id == msp_id, RawMessage.raw.is_not(None), Message.msp_id == msp_id,
        Message.outcome == DISCARDED, Message.id.in_(discards.where(AuditEntry.at <= cutoff)), ~recent)


def _drop_raw(ids_query, batch: int) -> int:
    ids = db.session.scalars(ids_query.order_by(RawMessage.id).limit(batch)).all()
    if ids:
        db.session.execute(update(RawMessage).where(RawMessage.id.in_(ids)).values(raw=None),
                           execution_options={"synchronize_session": False})
    return len(ids)


def _drop_raw_attachments(msp_id: int, cutoff: datetime, batch: int) -> int:
    ids = db.session.scalars(select(Attachment.id).where(
        Attachment.filename == RAW_ATTACHMENT[0], Attachment.content_type == RAW_ATTACHMENT[1],
        Attachment.message_id.in_(_on_closed_tickets(msp_id, cutoff))).order_by(Attachment.id).limit(batch)).all()
    if ids:
        db.session.execute(delete(Attachment).where(Attachment.id.in_(ids)),
                           execution_options={"synchronize_session": False})
    return len(ids)

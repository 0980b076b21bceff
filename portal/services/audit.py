"""The audit history: every change of a configuration record, who made it and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditEntry, User

COMMAND_LINE = "command line"


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    keys = sorted(set(before) | set(after))
    return {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}


def record(
    actor: User | None,
    msp_id: int,
    record_type: str,
    record_id: int,
    action: str,
    changes: dict[str, list[Any]] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        msp_id=msp_id,
        actor_id=actor.id if actor else None,
        actor_label=actor.email if actor else COMMAND_LINE,
        record_type=record_type,
        record_id=record_id,
        action=action,
        changes=changes or {},
    )
    db.session.add(entry)
    return entry


def history(msp_id: int, record_type: str, record_id: int, *, page: int = 1, per_page: int = 20):
    """Newest first; returns (entries, total)."""
    where = (
        AuditEntry.msp_id == msp_id,
        AuditEntry.record_type == record_type,
        AuditEntry.record_id == record_id,
    )
    total = db.session.scalar(select(func.count()).select_from(AuditEntry).where(*where))
    entries = db.session.scalars(
        select(AuditEntry)
        .where(*where)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return entries, total

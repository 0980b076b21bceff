"""The audit history: every change of a configuration record, who made it and when."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditEntry, Client, User
from portal.models.base import utcnow

COMMAND_LINE = "command line"
ACTION_LENGTH = 40  # audit_entries.action

Row = TypeVar("Row")


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    keys = sorted(set(before) | set(after))
    return {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}


def save_changes(row: Row | None, create: Callable[[], Row],
                 values: dict[str, tuple[str, Any]]) -> tuple[Row, dict[str, list[Any]]]:
    """Create (`create()`) or change one configuration row, stamp and flush it, and say what
    changed for the history. `values`: the history's name of each field → (attribute, value)."""
    before = {} if row is None else {name: getattr(row, attr) for name, (attr, _) in values.items()}
    if row is None:
        row = create()
        db.session.add(row)
    for attr, value in values.values():
        setattr(row, attr, value)
    row.updated_at = utcnow()  # type: ignore[attr-defined]
    db.session.flush()
    return row, diff(before, {name: getattr(row, attr) for name, (attr, _) in values.items()})


def record(
    actor: User | None,
    msp_id: int,
    record_type: str,
    record_id: int,
    action: str,
    changes: dict[str, list[Any]] | None = None,
    *,
    label: str | None = None,
) -> AuditEntry:
    """`label`: who the history names when no person acted (default: the command line)."""
    entry = AuditEntry(
        msp_id=msp_id,
        actor_id=actor.id if actor else None,
        actor_label=actor.email if actor else (label or COMMAND_LINE),
        record_type=record_type,
        record_id=record_id,
        # The column holds 40 characters; an action naming a long route name would not fit.
        action=action if len(action) <= ACTION_LENGTH else action[:ACTION_LENGTH - 1] + "…",
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


# History names whose values are a client's id (mailboxes and routes record their columns).
CLIENT_IDS = ("client_id", "parent_id")


def field_label(name: str, labels: dict[str, str]) -> str:
    """The form's label of a recorded field, else its name in words ("poll_interval" → "Poll interval")."""
    if name in labels:
        return labels[name]
    words = name.removesuffix("_id").replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def readable_history(entries: Iterable[AuditEntry],
                     labels: Mapping[str, dict[str, str]]) -> dict[int, list[tuple[str, Any, Any]]]:
    """Per entry id, (label, before, after) for each change, as people read them: the label of
    the field on the form of the record's own type (`labels` by record type) instead of its
    name, and a client's name instead of its id (only the entry's MSP's clients), the names of
    every entry read in one query."""
    entries = list(entries)
    ids = {v for e in entries for k in CLIENT_IDS for v in (e.changes or {}).get(k, []) if isinstance(v, int)}
    clients = {cid: (msp_id, name) for cid, msp_id, name in db.session.execute(
        select(Client.id, Client.msp_id, Client.name).where(Client.id.in_(ids)))} if ids else {}

    def value(entry: AuditEntry, key: str, v: Any) -> Any:
        if key in CLIENT_IDS and isinstance(v, int):
            msp_id, name = clients.get(v, (None, None))
            return name if name is not None and entry.msp_id in (msp_id, v) else "a deleted client"
        return v

    return {e.id: [(field_label(k, labels.get(e.record_type, {})), value(e, k, pair[0]), value(e, k, pair[1]))
                   for k, pair in (e.changes or {}).items()] for e in entries}

"""The ticket list as CSV, with the filters of the page: the ticket's own columns, then one column
per custom field of the MSP. It only reads."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.models import Ticket, User
from portal.services import ticket_list
from portal.services.custom_fields import list_fields, values_of

EXPORT_MAX = 10_000
COLUMNS = ("Reference", "Subject", "Client", "Contact", "Status", "Priority", "Type", "Assigned to", "Created",
           "Updated")


def _safe(value) -> str:
    """A cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def tickets_csv(msp_id: int, filters: ticket_list.TicketFilters) -> tuple[str, bool]:
    """(the CSV, whether it stopped at EXPORT_MAX rows). Newest activity first."""
    query = ticket_list.filtered_query(msp_id, filters).options(selectinload(Ticket.client),
                                                                 selectinload(Ticket.contact))
    rows = list(db.session.scalars(query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(EXPORT_MAX + 1)))
    capped = len(rows) > EXPORT_MAX
    rows = rows[:EXPORT_MAX]
    fields = list_fields(msp_id)
    values = values_of(msp_id, [t.id for t in rows]) if fields and rows else {}
    people = {uid: name or email for uid, name, email in
              db.session.execute(select(User.id, User.name, User.email).where(User.msp_id == msp_id))}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, *(f.name for f in fields)])
    for t in rows:
        own = values.get(t.id, {})
        writer.writerow([_safe(v) for v in (
            t.reference, t.subject, t.client.name, t.contact.email if t.contact else "", t.status, t.priority,
            t.type or "", people.get(t.assignee_id, ""), t.created_at.isoformat(timespec="seconds"),
            t.updated_at.isoformat(timespec="seconds"), *(own.get(f.id, "") for f in fields))])
    return out.getvalue(), capped

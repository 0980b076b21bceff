"""DESIGN step 9, the route's extraction rules: after a route has made a ticket, each rule reads
its value from the subject, the visible body or a header (portal.mail.extract) and sets a custom
field, the type, the priority, the SLA policy or the contact. A value that does not fit its
target is named in the trace and not applied. Flush, never commit; no query may flush here (the
batch writes the new ticket itself), so lookups run without autoflush."""

from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db
from portal.inbound.context import IngestContext
from portal.mail.extract import rule_of, run_rules
from portal.models import Contact, Message, Route, Ticket, TicketFieldValue


def apply_extraction(ticket: Ticket, route: Route | None, message: Message, item, ctx: IngestContext,
                     trace: list[str]) -> None:
    if route is None or not route.extraction_rules or ctx.extraction is None:
        return
    targets, field_ids = ctx.extraction
    parsed = item.parsed
    found = run_rules([rule_of(r) for r in route.extraction_rules], parsed.subject or "", message.body_text or "",
                      parsed.header, targets)
    values: dict[int, str] = {}
    for f in found:
        took = f"extraction: {f.rule.describe()} took {f.raw[:80]!r}"
        if f.value is None:
            trace.append(f"{took}: not applied, {f.why}")
            continue
        target = f.rule.target
        if target == "priority":
            ticket.priority = f.value
        elif target == "type":
            ticket.type = f.value
        elif target == "sla":
            ticket.sla_policy_id = int(f.value)
        elif target == "contact":
            ticket.contact = _contact(ctx, ticket, f.value)
        else:
            values[field_ids[target[6:].strip()]] = f.value
        shown = next((name for name, pid in targets.sla_policies.items() if str(pid) == f.value), f.value) \
            if target == "sla" else f.value
        trace.append(f"{took}: {target.removeprefix('field:')} set to {shown}")
    for field_id, value in values.items():  # a new ticket: no values yet
        db.session.add(TicketFieldValue(msp_id=ticket.msp_id, ticket=ticket, field_id=field_id, value=value))


def _contact(ctx: IngestContext, ticket: Ticket, address: str) -> Contact:
    contact = ctx.known.contacts.get(address)
    if contact is None:
        with db.session.no_autoflush:
            contact = db.session.scalar(select(Contact).where(Contact.msp_id == ticket.msp_id, Contact.email == address))
        if contact is None:
            contact = Contact(msp_id=ticket.msp_id, client_id=ticket.client_id, email=address[:320])
            db.session.add(contact)
        ctx.known.contacts[address] = contact
    return contact

"""An MSP's custom ticket fields (text, number, choice, date) and its ticket-type allow-list: set
up on Settings › Custom fields, filled on the ticket page and by routes' extraction rules, filtered
in the ticket list. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select

from portal.extensions import db
from portal.mail.extract import FIELD_KINDS, Targets, field_value
from portal.models.base import utcnow
from portal.models import Client, CustomField, Mailbox, Route, SlaPolicy, Ticket, TicketFieldValue, User
from portal.services import ValidationError, audit

NAME_MAX = 60
CHOICES_MAX = 50
TYPES_MAX = 100


def list_fields(msp_id: int) -> list[CustomField]:
    return list(db.session.scalars(select(CustomField).where(CustomField.msp_id == msp_id)
                                   .order_by(CustomField.position, CustomField.id)))


def field_or_none(msp_id: int, field_id: int) -> CustomField | None:
    return db.session.scalar(select(CustomField).where(CustomField.id == field_id, CustomField.msp_id == msp_id))


def tickets_with_value(custom: CustomField) -> int:
    return db.session.scalar(select(func.count()).select_from(TicketFieldValue)
                             .where(TicketFieldValue.field_id == custom.id)) or 0


def ticket_types(msp_id: int) -> list[str]:
    """The MSP's allowed ticket types; empty: any type."""
    return list(db.session.scalar(select(Client.ticket_types).where(Client.id == msp_id)) or [])


def targets_of(msp_id: int) -> Targets:
    """What extraction rules may fill, for portal.mail.extract."""
    policies = db.session.execute(select(SlaPolicy.name, SlaPolicy.id).where(SlaPolicy.msp_id == msp_id)).all()
    return Targets(fields={f.name: (f.kind, list(f.choices or [])) for f in list_fields(msp_id)},
                   types=ticket_types(msp_id),
                   sla_policies={" ".join(name.split()).casefold(): pid for name, pid in policies})


def extraction_setup(msp_id: int) -> tuple[Targets, dict[str, int]]:
    """For the pipeline: the targets and each custom field's id by name."""
    return targets_of(msp_id), {f.name: f.id for f in list_fields(msp_id)}


@dataclass
class FieldInput:
    name: str
    kind: str = "text"
    choices: list[str] = field(default_factory=list)


def _clean(msp_id: int, data: FieldInput, custom: CustomField | None) -> FieldInput:
    errors: dict[str, list[str]] = {}
    name = " ".join((data.name or "").split())
    if not name:
        errors["name"] = ["Give the field a name."]
    elif len(name) > NAME_MAX:
        errors["name"] = [f"The name is at most {NAME_MAX} characters."]
    elif any(f.name.casefold() == name.casefold() and f is not custom for f in list_fields(msp_id)):
        errors["name"] = [f"There is already a field called {name}."]
    if data.kind not in FIELD_KINDS:
        errors["kind"] = [f"The kind is one of {', '.join(FIELD_KINDS)}."]
    choices: list[str] = []
    for c in data.choices:
        c = " ".join(c.split())
        if c and c.casefold() not in {x.casefold() for x in choices}:
            choices.append(c)
    if data.kind == "choice":
        if not choices:
            errors["choices"] = ["A choice field needs its choices, one a line."]
        elif len(choices) > CHOICES_MAX or any(len(c) > 100 for c in choices):
            errors["choices"] = [f"At most {CHOICES_MAX} choices of up to 100 characters each."]
    else:
        choices = []
    if custom is not None and data.kind != custom.kind and tickets_with_value(custom):
        errors.setdefault("kind", []).append(
            f"Tickets have a value in {custom.name}: its kind stays {custom.kind}. Add a new field instead.")
    if custom is not None and custom.kind == "choice" and data.kind == "choice" and not errors:
        used = set(db.session.scalars(select(TicketFieldValue.value).where(TicketFieldValue.field_id == custom.id)
                                      .distinct()))
        if gone := sorted(used - set(choices)):
            errors["choices"] = [f"Tickets have {', '.join(gone)}: keep {'it' if len(gone) == 1 else 'them'}."]
    if errors:
        raise ValidationError(errors)
    return FieldInput(name=name, kind=data.kind, choices=choices)


def _routes_of(msp_id: int) -> list[Route]:
    return list(db.session.scalars(select(Route).join(Mailbox, Route.mailbox_id == Mailbox.id)
                                   .where(Mailbox.msp_id == msp_id)))


def save_field(msp: Client, data: FieldInput, *, actor: User | None, custom: CustomField | None = None) -> CustomField:
    clean = _clean(msp.id, data, custom)
    before = {} if custom is None else {"name": custom.name, "kind": custom.kind, "choices": list(custom.choices)}
    if custom is None:
        last = db.session.scalar(select(func.max(CustomField.position)).where(CustomField.msp_id == msp.id))
        custom = CustomField(msp_id=msp.id, position=(last or 0) + 1)
        db.session.add(custom)
    elif clean.name != custom.name:
        # The routes' rules name the field: they follow the new name.
        old, new = f"field:{custom.name}", f"field:{clean.name}"
        for route in _routes_of(msp.id):
            if any(r.get("target") == old for r in route.extraction_rules or []):
                route.extraction_rules = [{**r, "target": new} if r.get("target") == old else r
                                          for r in route.extraction_rules]
    custom.name, custom.kind, custom.choices = clean.name, clean.kind, clean.choices
    db.session.flush()
    changes = audit.diff(before, {"name": custom.name, "kind": custom.kind, "choices": list(custom.choices)})
    if changes:
        audit.record(actor, msp.id, "client", msp.id,
                     f"field {custom.name} {'changed' if before else 'added'}", changes)
    return custom


def delete_field(msp: Client, custom: CustomField, *, actor: User | None) -> int:
    """Remove the field, its values on tickets and the rules that fill it; returns how many
    tickets had a value."""
    count = tickets_with_value(custom)
    target = f"field:{custom.name}"
    for route in _routes_of(msp.id):
        if any(r.get("target") == target for r in route.extraction_rules or []):
            route.extraction_rules = [r for r in route.extraction_rules if r.get("target") != target]
    db.session.execute(delete(TicketFieldValue).where(TicketFieldValue.field_id == custom.id))
    audit.record(actor, msp.id, "client", msp.id, f"field {custom.name} removed",
                 {"name": [custom.name, None], "tickets with a value": [count, None]})
    db.session.delete(custom)
    db.session.flush()
    return count


def import_fields(msp: Client, items: list, *, actor: User | None) -> bool:
    """The configuration file's fields: each added or changed by name, in the file's order. A
    field the file leaves out is kept, with its values: removing one is done on its page."""
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise ValidationError({"custom_fields": ["A list of fields, each with name, kind and choices."]})
    changed = False
    order: list[CustomField] = []
    for i, item in enumerate(items):
        data = FieldInput(name=str(item.get("name") or ""), kind=str(item.get("kind") or "text"),
                          choices=[str(c) for c in item.get("choices") or []])
        existing = next((f for f in list_fields(msp.id) if f.name.casefold() == " ".join(data.name.split()).casefold()),
                        None)
        if existing is not None and (existing.name, existing.kind, existing.choices) == (data.name, data.kind,
                                                                                          data.choices):
            order.append(existing)
            continue
        try:
            order.append(save_field(msp, data, actor=actor, custom=existing))
        except ValidationError as exc:
            raise ValidationError({f"custom_fields[{i}].{k}": v for k, v in exc.errors.items()}) from None
        changed = True
    rest = [f for f in list_fields(msp.id) if f not in order]
    for position, f in enumerate([*order, *rest], 1):
        if f.position != position:
            f.position, changed = position, True
    db.session.flush()
    return changed


def move_field(msp: Client, custom: CustomField, step: int, *, actor: User | None) -> bool:
    """One place up (-1) or down (+1); False at the edge."""
    fields = list_fields(msp.id)
    i = fields.index(custom)
    j = i + step
    if not 0 <= j < len(fields):
        return False
    fields[i], fields[j] = fields[j], fields[i]
    for position, f in enumerate(fields, 1):
        f.position = position
    db.session.flush()
    audit.record(actor, msp.id, "client", msp.id, "fields reordered",
                 {"order": [None, [f.name for f in fields]]})
    return True


def save_ticket_types(msp: Client, types: list[str], *, actor: User | None) -> bool:
    cleaned: list[str] = []
    for t in types:
        t = " ".join(t.split())
        if t and t.casefold() not in {x.casefold() for x in cleaned}:
            cleaned.append(t)
    if len(cleaned) > TYPES_MAX or any(len(t) > 60 for t in cleaned):
        raise ValidationError({"ticket_types": [f"At most {TYPES_MAX} types of up to 60 characters each."]})
    before = list(msp.ticket_types or [])
    if before == cleaned:
        return False
    msp.ticket_types = cleaned or None
    db.session.flush()
    audit.record(actor, msp.id, "client", msp.id, "ticket types changed", {"ticket types": [before, cleaned]})
    return True


def type_problem(msp_id: int, value: str | None) -> str | None:
    """Why a ticket type may not be used (not on a non-empty allow-list), or None."""
    allowed = ticket_types(msp_id)
    if value and allowed and value.casefold() not in {t.casefold() for t in allowed}:
        return f"The type is one of {', '.join(allowed)}."
    return None


# --- values on tickets ---------------------------------------------------------------------------


def ticket_values(ticket: Ticket) -> dict[int, str]:
    """field id → value."""
    return dict(db.session.execute(select(TicketFieldValue.field_id, TicketFieldValue.value)
                                   .where(TicketFieldValue.ticket_id == ticket.id)).all())


def values_of(msp_id: int, ticket_ids: list[int]) -> dict[int, dict[int, str]]:
    """ticket id → field id → value, for a page of tickets (the CSV)."""
    out: dict[int, dict[int, str]] = {}
    for tid, fid, value in db.session.execute(
            select(TicketFieldValue.ticket_id, TicketFieldValue.field_id, TicketFieldValue.value)
            .where(TicketFieldValue.msp_id == msp_id, TicketFieldValue.ticket_id.in_(ticket_ids))):
        out.setdefault(tid, {})[fid] = value
    return out


def set_value(ticket: Ticket, custom: CustomField, value: str | None) -> tuple[str | None, str | None] | None:
    """Store one value (None or "": none); (old, new) or None if unchanged. The value must be
    cleaned already (field_value)."""
    row = db.session.scalar(select(TicketFieldValue).where(TicketFieldValue.ticket_id == ticket.id,
                                                           TicketFieldValue.field_id == custom.id))
    old = row.value if row is not None else None
    new = value or None
    if old == new:
        return None
    if new is None:
        db.session.delete(row)
    elif row is None:
        db.session.add(TicketFieldValue(msp_id=ticket.msp_id, ticket_id=ticket.id, field_id=custom.id, value=new))
    else:
        row.value = new
    return old, new


def update_ticket_values(ticket: Ticket, posted: dict[int, str], actor: User | None) -> list[str]:
    """The ticket page's custom fields as posted (field id → text): every value checked against
    its field's kind, then what changed saved as one entry in the ticket's history. Returns the
    names of the fields that changed."""
    fields = list_fields(ticket.msp_id)
    errors: dict[str, list[str]] = {}
    wanted: dict[int, str | None] = {}
    for f in fields:
        if f.id not in posted:
            continue
        text = posted[f.id].strip()
        if not text:
            wanted[f.id] = None
            continue
        try:
            wanted[f.id] = field_value(f.kind, f.choices, text)
        except ValueError as exc:
            errors[f"cf{f.id}"] = [f"{f.name}: {exc}."]
    if errors:
        raise ValidationError(errors)
    changes: dict[str, list] = {}
    for f in fields:
        if f.id in wanted and (changed := set_value(ticket, f, wanted[f.id])) is not None:
            changes[f.name] = list(changed)
    if changes:
        ticket.updated_at = utcnow()
        audit.record(actor, ticket.msp_id, "ticket", ticket.id, "fields changed", changes)
        db.session.flush()
    return list(changes)

"""Service levels: an MSP's SLA policies (create, change, delete), the policy a new ticket gets
(route → mailbox → client → its parents), and the hooks through which the ticket code keeps a
ticket's clocks (portal.sla.clock) in step with its life. Flush, never commit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import case, func, literal, or_, select

from portal import tenancy
from portal.extensions import db
from portal.models import Client, Mailbox, Message, RawMessage, Route, SlaPolicy, Ticket, User
from portal.models.base import UTCDateTime, utcnow
from portal.models.tickets import PRIORITIES
from portal.services import ValidationError, audit
from portal.sla import clock
from portal.sla.business_time import WEEKDAYS, BusinessHoursError
from portal.sla.clock import CLOCKS, Policy

WEEKDAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
                 "sat": "Saturday", "sun": "Sunday"}
CLOCK_NAMES = {"response": "first response", "resolution": "resolution"}
NAME_MAX = 100
HOLIDAYS_MAX = 400
# A ticket in one of these has its resolution clock stopped; leaving them reopens it.
STOPPED = ("resolved", "closed", "archived", "merged", "split")
RECORD = "sla_policy"
_SPAN = re.compile(r"^(\d{1,2}:\d{2})\s*[-–]\s*(\d{1,2}:\d{2})$")


# --- policies ------------------------------------------------------------------------------------


def policies(msp_id: int) -> list[SlaPolicy]:
    return list(db.session.scalars(select(SlaPolicy).where(SlaPolicy.msp_id == msp_id)
                                   .order_by(func.lower(SlaPolicy.name))))


def get_policy(msp_id: int, policy_id: int | None) -> SlaPolicy | None:
    """The policy with this id if it is this MSP's, else None (views answer 404)."""
    if policy_id is None:
        return None
    return db.session.scalar(select(SlaPolicy).where(SlaPolicy.id == policy_id, SlaPolicy.msp_id == msp_id))


def get_policy_by_name(msp_id: int, name: str) -> SlaPolicy | None:
    return db.session.scalar(select(SlaPolicy).where(SlaPolicy.msp_id == msp_id, SlaPolicy.name == name))


@dataclass
class PolicyForm:
    """A policy as its page posts it: per weekday its spans as typed ("08:00-12:00, 13:00-17:00"),
    holidays one per line, per priority and clock (hours, minutes) as typed."""

    name: str
    timezone: str
    hours: Mapping[str, str]
    holidays: str
    targets: Mapping[str, Mapping[str, tuple[str, str]]]
    warning_percent: str = "80"


def form_of(policy: SlaPolicy | None) -> PolicyForm:
    """What the page shows for a policy (a new one: Monday to Friday 08:00-17:00, UTC)."""
    if policy is None:
        return PolicyForm(name="", timezone="", holidays="", warning_percent="80",
                          hours={d: ("08:00-17:00" if d in WEEKDAYS[:5] else "") for d in WEEKDAYS},
                          targets={p: {c: ("", "") for c in CLOCKS} for p in PRIORITIES})
    targets = {}
    for priority in PRIORITIES:
        pair = policy.targets.get(priority) or {}
        targets[priority] = {c: (str(pair[c] // 60), str(pair[c] % 60)) if pair.get(c) else ("", "") for c in CLOCKS}
    return PolicyForm(name=policy.name, timezone=policy.timezone, holidays="\n".join(policy.holidays or []),
                      hours={d: ", ".join(f"{a}-{b}" for a, b in policy.business_hours.get(d) or []) for d in WEEKDAYS},
                      targets=targets, warning_percent=str(policy.warning_percent))


def read_form(data: PolicyForm) -> dict[str, Any]:
    """The stored values of a posted form (business_hours, holidays, targets in minutes, ...);
    ValidationError naming each field that cannot be read. save_policy checks the rest."""
    errors: dict[str, list[str]] = {}
    hours: dict[str, list[list[str]]] = {}
    for day in WEEKDAYS:
        spans = []
        for part in (p.strip() for p in (data.hours.get(day) or "").split(",")):
            if not part:
                continue
            found = _SPAN.match(part)
            if not found:
                errors.setdefault(f"hours_{day}", []).append(
                    f"{part!r} is not a span like 08:00-17:00 (several: 08:00-12:00, 13:00-17:00).")
                continue
            spans.append([_padded(found.group(1)), _padded(found.group(2))])
        if spans:
            hours[day] = spans
    targets: dict[str, dict[str, int]] = {}
    for priority in PRIORITIES:
        for name in CLOCKS:
            typed = (data.targets.get(priority) or {}).get(name) or ("", "")
            minutes = _minutes_typed(*typed)
            if minutes is None:
                errors.setdefault(f"{priority}_{name}", []).append(
                    "Give whole hours and minutes (0-59), or leave both empty for no target.")
            elif minutes:
                targets.setdefault(priority, {})[name] = minutes
    holidays = [line.strip() for line in (data.holidays or "").splitlines() if line.strip()]
    percent = (data.warning_percent or "").strip()
    if not (percent.isascii() and percent.isdigit()):
        errors.setdefault("warning_percent", []).append("The warning share is a whole number from 1 to 99.")
    if errors:
        raise ValidationError(errors)
    return {"name": data.name, "timezone": (data.timezone or "").strip(), "business_hours": hours,
            "holidays": holidays, "targets": targets, "warning_percent": int(percent)}


def _padded(value: str) -> str:
    return value.zfill(5)


def _minutes_typed(hours: str, minutes: str) -> int | None:
    """Minutes from typed hours and minutes: 0 for both empty, None for what is not a number."""
    hours, minutes = (hours or "").strip(), (minutes or "").strip()
    if any(v and not (v.isascii() and v.isdigit() and len(v) <= 6) for v in (hours, minutes)):
        return None
    if minutes and int(minutes) > 59:
        return None
    return int(hours or 0) * 60 + int(minutes or 0)


def _checked(msp_id: int, values: Mapping[str, Any], policy: SlaPolicy | None) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    name = " ".join(str(values.get("name") or "").split())
    if not name:
        errors["name"] = ["Give the policy a name."]
    elif len(name) > NAME_MAX:
        errors["name"] = [f"The name is at most {NAME_MAX} characters."]
    elif (other := get_policy_by_name(msp_id, name)) is not None and other is not policy:
        errors["name"] = [f"Another policy is already called {name}."]
    timezone = str(values.get("timezone") or "").strip()
    if not timezone:
        errors["timezone"] = ["Choose the time zone of the business hours."]
    holidays = [str(d).strip() for d in values.get("holidays") or []]
    if len(holidays) > HOLIDAYS_MAX:
        errors["holidays"] = [f"At most {HOLIDAYS_MAX} holidays."]
    targets = values.get("targets") or {}
    if not isinstance(targets, dict) or set(targets) - set(PRIORITIES):
        errors["targets"] = [f"Targets are per priority: {', '.join(PRIORITIES)}."]
    if not set(errors) - {"name"}:
        try:
            Policy.read(values.get("business_hours") or {}, holidays, timezone, targets,
                        values.get("warning_percent", 80))
        except BusinessHoursError as exc:
            errors[_field_of(str(exc))] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    hours = {d: [list(s) for s in values["business_hours"][d]] for d in WEEKDAYS if values["business_hours"].get(d)}
    return {"name": name, "timezone": timezone, "business_hours": hours,
            "holidays": sorted(set(holidays)), "targets": {p: dict(targets[p]) for p in PRIORITIES if p in targets},
            "warning_percent": values.get("warning_percent", 80)}


def _field_of(message: str) -> str:
    """The form field a BusinessHoursError speaks of (it names the weekday or priority first)."""
    head = message.split(":", 1)[0]
    if head in WEEKDAYS:
        return f"hours_{head}"
    if head in PRIORITIES:
        return "targets"
    for word, name in (("time zone", "timezone"), ("not a date", "holidays"), ("warning", "warning_percent"),
                       ("weekday", "hours_mon"), ("span", "hours_mon")):
        if word in message:
            return name
    return ""


def save_policy(msp_id: int, values: Mapping[str, Any], actor: User | None,
                policy: SlaPolicy | None = None) -> SlaPolicy:
    """Create or change a policy from its stored values (read_form's, or the configuration file's).
    Open tickets keep their due times until their priority or policy changes."""
    clean = _checked(msp_id, values, policy)
    policy, changes = audit.save_changes(policy, lambda: SlaPolicy(msp_id=msp_id),
                                         {k.replace("_", " "): (k, v) for k, v in clean.items()})
    if changes:
        audit.record(actor, msp_id, RECORD, policy.id, "updated" if len(changes) < len(clean) else "created", changes)
    return policy


@dataclass(frozen=True)
class Usage:
    clients: int
    mailboxes: int
    routes: int
    tickets: int

    def words(self) -> str:
        parts = [f"{n} {what if n == 1 else what + 's'}" for n, what in
                 ((self.clients, "client"), (self.mailboxes, "mailbox"), (self.routes, "route"),
                  (self.tickets, "open ticket")) if n]
        return ", ".join(parts).replace("mailboxs", "mailboxes") or "nothing"


def usage(policy: SlaPolicy) -> Usage:
    def count(model, *where) -> int:
        return db.session.scalar(select(func.count()).select_from(model).where(
            model.sla_policy_id == policy.id, *where)) or 0
    return Usage(count(Client, Client.msp_id == policy.msp_id), count(Mailbox, Mailbox.msp_id == policy.msp_id),
                 count(Route), count(Ticket, Ticket.msp_id == policy.msp_id, Ticket.status.not_in(STOPPED)))


def delete_policy(policy: SlaPolicy, actor: User | None) -> Usage:
    """Remove a policy: whoever chose it inherits again, its tickets keep their due times."""
    used = usage(policy)
    audit.record(actor, policy.msp_id, RECORD, policy.id, "deleted", {"name": [policy.name, None]})
    for model in (Client, Mailbox, Route, Ticket):
        # Done here as well as by the foreign key: SQLite without its pragma would keep the id.
        for row in db.session.scalars(select(model).where(model.sla_policy_id == policy.id)):
            row.sla_policy_id = None
    db.session.delete(policy)
    db.session.flush()
    return used


# --- which policy: route → mailbox → client → its parents ----------------------------------------


def policy_id_for(chain: Iterable[Any], mailbox: Mailbox | None = None, route: Route | None = None) -> int | None:
    """The policy a new ticket gets: its route's, else its mailbox's, else the nearest client's
    up the chain (the ticket's client first, the MSP last); None when nobody chose one."""
    for row in (route, mailbox):
        if row is not None and row.sla_policy_id:
            return row.sla_policy_id
    return tenancy.inherited(chain, "sla_policy_id")


def inherited_by(client: Client) -> tuple[SlaPolicy | None, Client | None]:
    """What a client without its own choice inherits: (policy, the ancestor that chose it)."""
    source = tenancy.nearest(tenancy.lineage(client)[1:], "sla_policy_id")
    return (db.session.get(SlaPolicy, source.sla_policy_id), source) if source is not None else (None, None)


def choose(row: Client | Mailbox | Route, policy: SlaPolicy | None, actor: User | None, msp_id: int) -> bool:
    """Set the policy of a client (None: inherit), mailbox or route (None: the client's). Open
    tickets keep theirs: a new choice counts for new tickets only."""
    if policy is not None and policy.msp_id != msp_id:
        raise ValidationError({"sla_policy_id": ["Choose one of your SLA policies."]})
    new_id = policy.id if policy is not None else None
    if row.sla_policy_id == new_id:
        return False
    old = db.session.get(SlaPolicy, row.sla_policy_id) if row.sla_policy_id else None
    row.sla_policy_id = new_id
    kind = {Client: "client", Mailbox: "mailbox", Route: "mailbox"}[type(row)]
    record_id = row.mailbox_id if isinstance(row, Route) else row.id
    field = f"route {row.name}: SLA policy" if isinstance(row, Route) else "SLA policy"
    audit.record(actor, msp_id, kind, record_id, "SLA policy", {field: [old.name if old else None,
                                                                       policy.name if policy else None]})
    db.session.flush()
    return True


# --- a ticket's clocks -----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _read(policy_id: int, updated_at: datetime, hours: str, holidays: str, timezone: str, targets: str,
          warning: int) -> Policy:
    # Keyed by the row's id and stamp (and its values, as text, so that a change is never missed).
    return Policy.read(json.loads(hours), json.loads(holidays), timezone, json.loads(targets), warning)


def clock_policy(row: SlaPolicy | None) -> Policy | None:
    """The clock arithmetic of a stored policy; None without one (or one that no longer reads)."""
    if row is None:
        return None
    try:
        return _read(row.id, row.updated_at, json.dumps(row.business_hours, sort_keys=True),
                     json.dumps(row.holidays or []), row.timezone, json.dumps(row.targets, sort_keys=True),
                     row.warning_percent)
    except BusinessHoursError:
        return None


def policy_of(ticket: Ticket) -> SlaPolicy | None:
    return db.session.get(SlaPolicy, ticket.sla_policy_id) if ticket.sla_policy_id else None


def received_at(raw: RawMessage | None) -> datetime:
    """When the customer's mail arrived: the server's receive time, else when it was fetched,
    else now (the ticket is being created)."""
    if raw is not None and (raw.received_at or raw.fetched_at):
        return raw.received_at or raw.fetched_at
    return utcnow()


def ticket_created(ticket: Ticket, policy_id: int | None, at: datetime) -> None:
    """A new ticket: its policy, and its clocks from `at` (the first mail's receive time)."""
    ticket.sla_policy_id = policy_id
    policy = clock_policy(db.session.get(SlaPolicy, policy_id)) if policy_id else None
    if policy is not None:
        clock.start(ticket, policy, at)


def status_changed(ticket: Ticket, old: str, new: str, at: datetime | None = None) -> None:
    """Waiting pauses the clocks, leaving it resumes them; resolved (closed, merged ...) stops
    the resolution clock, leaving it goes on where it stopped."""
    if ticket.sla_started_at is None or old == new:
        return
    at = at or utcnow()
    policy = clock_policy(policy_of(ticket))
    if new in STOPPED:
        if old not in STOPPED:
            clock.resolved(ticket, policy, at)
        return
    if old in STOPPED:
        clock.reopened(ticket, policy, at)
    if new == "waiting":
        clock.pause(ticket, at)
    elif ticket.sla_paused_at is not None:
        clock.resume(ticket, policy, at)


def replied(ticket: Ticket, at: datetime) -> None:
    """A public reply by staff went out: the first stops the response clock."""
    if ticket.sla_started_at is not None:
        clock.responded(ticket, at)


def recompute(ticket: Ticket) -> None:
    """The due times again, after the priority or the policy changed."""
    if ticket.sla_started_at is not None:
        clock.recompute(ticket, clock_policy(policy_of(ticket)))


def change_ticket_policy(ticket: Ticket, policy: SlaPolicy | None, actor: User | None) -> bool:
    """A technician gives the ticket another policy (None: none): the due times follow, and
    the history says so. A ticket that had no clocks starts them at its first mail."""
    if policy is not None and policy.msp_id != ticket.msp_id:
        raise ValidationError({"sla_policy_id": ["Choose one of your SLA policies."]})
    new_id = policy.id if policy is not None else None
    if ticket.sla_policy_id == new_id:
        return False
    old = policy_of(ticket)
    ticket.sla_policy_id = new_id
    if ticket.sla_started_at is None and policy is not None:
        clock.start(ticket, clock_policy(policy), _first_mail_at(ticket))
        if ticket.status in STOPPED:
            clock.resolved(ticket, clock_policy(policy), ticket.updated_at or utcnow())
    else:
        recompute(ticket)
    ticket.updated_at = utcnow()
    audit.record(actor, ticket.msp_id, "ticket", ticket.id, "SLA policy",
                 {"SLA policy": [old.name if old else None, policy.name if policy else None]})
    db.session.flush()
    return True


def _first_mail_at(ticket: Ticket) -> datetime:
    raw = db.session.scalar(select(RawMessage).join(Message, Message.raw_message_id == RawMessage.id)
                            .where(Message.ticket_id == ticket.id).order_by(Message.id).limit(1))
    return received_at(raw) if raw is not None else (ticket.created_at or utcnow())


# --- what the ticket page shows --------------------------------------------------------------------


@dataclass(frozen=True)
class ClockView:
    name: str  # "first response", "resolution"
    due: datetime | None
    left: timedelta | None  # business time left; negative: overdue by
    state: str  # "running", "paused", "met", "breached", "none"


@dataclass(frozen=True)
class TicketSla:
    policy: SlaPolicy | None
    clocks: tuple[ClockView, ...]
    paused: bool


def ticket_sla(ticket: Ticket, now: datetime | None = None) -> TicketSla:
    now = now or utcnow()
    row = policy_of(ticket)
    policy = clock_policy(row)
    views = []
    for name in CLOCKS:
        due = ticket.first_response_due_at if name == "response" else ticket.resolution_due_at
        if due is None or policy is None:
            views.append(ClockView(CLOCK_NAMES[name], due, None, "none"))
            continue
        if clock.stopped_at(ticket, name) is not None:
            state = "breached" if clock.breached(ticket, name, now) else "met"
        else:
            state = "paused" if ticket.sla_paused_at else ("breached" if clock.breached(ticket, name, now) else "running")
        views.append(ClockView(CLOCK_NAMES[name], due, clock.left(ticket, policy, name, now), state))
    return TicketSla(row, tuple(views), ticket.sla_paused_at is not None)


# --- the ticket list ---------------------------------------------------------------------------------


# Where tickets without a running clock sort in "due first": after every real due time.
NEVER_DUE = datetime(9999, 12, 31, tzinfo=UTC)


def due_first_key():
    """The nearest due time of the clocks still running, as SQL (NEVER_DUE: none runs)."""
    response = case((Ticket.first_response_at.is_(None), Ticket.first_response_due_at), else_=None)
    resolution = case((Ticket.resolved_at.is_(None), Ticket.resolution_due_at), else_=None)
    return case((response.is_(None) & resolution.is_(None), literal(NEVER_DUE, UTCDateTime())), (response.is_(None), resolution),
                (resolution.is_(None), response), (response <= resolution, response), else_=resolution)


def running_clock_filter():
    """Tickets with a clock still running: the ones whose due_first_key is not NEVER_DUE."""
    return or_(Ticket.first_response_at.is_(None) & Ticket.first_response_due_at.is_not(None),
               Ticket.resolved_at.is_(None) & Ticket.resolution_due_at.is_not(None))


def due_first_value(ticket: Ticket) -> datetime:
    """due_first_key for a loaded ticket (the list's cursor)."""
    running = [due for due, stopped in ((ticket.first_response_due_at, ticket.first_response_at),
                                        (ticket.resolution_due_at, ticket.resolved_at)) if due and not stopped]
    return min(running) if running else NEVER_DUE


def list_due(ticket: Ticket, now: datetime | None = None) -> tuple[datetime | None, bool]:
    """What the list shows of a ticket's service level: its nearest running due time (None:
    none runs) and whether that has passed."""
    due = due_first_value(ticket)
    if due == NEVER_DUE:
        return None, False
    return due, due < (ticket.sla_paused_at or now or utcnow())


def breached_filter(now: datetime):
    """Tickets with a clock whose due time passed before it stopped (or, running, before now)."""
    return or_(
        (Ticket.first_response_due_at.is_not(None)) & (
            (Ticket.first_response_at.is_not(None) & (Ticket.first_response_at > Ticket.first_response_due_at))
            | (Ticket.first_response_at.is_(None) & (Ticket.first_response_due_at < func.coalesce(Ticket.sla_paused_at, now)))),
        (Ticket.resolution_due_at.is_not(None)) & (
            (Ticket.resolved_at.is_not(None) & (Ticket.resolved_at > Ticket.resolution_due_at))
            | (Ticket.resolved_at.is_(None) & (Ticket.resolution_due_at < func.coalesce(Ticket.sla_paused_at, now)))),
    )


def due_before_filter(end: datetime):
    """Tickets with a running clock due before `end` (overdue ones too)."""
    return or_(Ticket.first_response_at.is_(None) & (Ticket.first_response_due_at < end),
               Ticket.resolved_at.is_(None) & (Ticket.resolution_due_at < end))

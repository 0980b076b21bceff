"""DESIGN step 9's alert rule: monitoring mail that a route with an alert rule places keeps one
ticket per open problem. Called by portal.inbound.decide after routing; flush, never commit.

- PROBLEM, the key has an open ticket (same MSP and client): appended and counted; the status
  stays as it is.
- PROBLEM, no open ticket: a new ticket carrying the key. If the key's last ticket was resolved by
  a recovery and the key is flapping (more state changes than the rule allows within its
  window), the mail goes onto that ticket instead, which is marked flapping and not reopened.
- RECOVERY, an open ticket (or a flapping resolved one): appended; the ticket is resolved, or
  only marked recovered, as the rule says.
- RECOVERY, no ticket: recorded (kept, no ticket) with the reason.
- Never an acknowledgement: the sender is a monitoring system.

Threading comes first (DESIGN step 6): a monitoring mail that carries a reference to one of our
tickets, or answers a Message-ID we know, is a reply and follows the status rules of step 7; the
alert rule decides only mail that threads to no ticket.

Two workers deciding PROBLEM mail for one key at the same time must not open two tickets: before
the open tickets of a batch's keys are read, the MSP's ticket counter row is locked (the lock
every new ticket takes anyway, portal.inbound.context.TicketNumbers), so the second batch reads
them only after the first has committed its ticket.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select

from portal.extensions import db
from portal.inbound.lookups import one_of
from portal.inbound.read import Prepared
from portal.inbound.tickets import _append, create_ticket
from portal.mail.alerts import PROBLEM, RECOVERY, AlertReading, AlertRule, compile_rule, flapping, recent_changes
from portal.mail.route import RouteChoice
from portal.mail.rules import APPEND, StatusAction
from portal.models import Message, Ticket
from portal.models.base import utcnow

OPEN = ("new", "open", "waiting")
# The reason on a recovery that finds no ticket (trace, and the message's outcome "ignored").
RECOVERY_NO_TICKET = "a recovery for a problem with no open ticket"


def read_alert(rule: AlertRule, item: Prepared) -> tuple[AlertReading | None, str]:
    parsed = item.parsed
    return rule.read(parsed.subject or "", parsed.text or "", parsed.header)


class AlertLookups:
    """The alert rules of a mailbox's routes, and per batch the latest ticket of each key its mail
    names (open, or resolved within the longest flapping window), read in one query under the
    MSP's counter lock."""

    def __init__(self, msp_id: int, routes) -> None:
        self.msp_id = msp_id
        self.rules: dict[int, AlertRule] = {r.id: compile_rule(r.alert_rule) for r in routes if r.alert_rule}
        self.window = max((r.flap_minutes for r in self.rules.values()), default=0)
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[tuple[int, str], Ticket] = {}

    def load(self, items: list[Prepared], lock) -> None:
        if not self.rules:
            return
        keys = {reading.key for item in items if item.parsed is not None for rule in self.rules.values()
                if (reading := read_alert(rule, item)[0]) is not None}
        if not keys:
            return
        lock()
        recent = utcnow() - timedelta(minutes=self.window)
        query = select(Ticket).where(Ticket.msp_id == self.msp_id, or_(
            Ticket.status.in_(OPEN), and_(Ticket.status == "resolved", Ticket.alert_last_at >= recent)))
        for condition in one_of(Ticket.alert_key, sorted(keys)):
            for ticket in db.session.scalars(query.where(condition).order_by(Ticket.id)):
                self.tickets[(ticket.client_id, ticket.alert_key)] = ticket  # the latest wins


def apply_alert_rule(client_id: int, message: Message, item: Prepared, ctx, choice: RouteChoice,
                     trace: list[str]) -> tuple[bool, Ticket | None]:
    """(decided, ticket): decided False when the route has no alert rule or the mail does not
    read as an alert (it then becomes an ordinary ticket)."""
    route = choice.rule
    rule = ctx.alerts.rules.get(route.id) if route is not None else None
    if rule is None:
        return False, None
    label = f"alert rule of route {route.name!r}"
    reading, why = read_alert(rule, item)
    if reading is None:
        trace.append(f"{label}: not an alert mail ({why}); an ordinary ticket")
        return False, None
    trace.append(f"{label}: key {reading.key!r}, {reading.state} ({reading.state_text})")
    now = item.stored.received_at or utcnow()
    found = ctx.alerts.tickets.get((client_id, reading.key))
    changed = found is not None and found.alert_state != reading.state
    changes = recent_changes(found.alert_changes or [], now, rule.flap_minutes, add=changed) if found else []
    flaps = flapping(changes, rule)
    # A flapping key's resolved ticket takes the mail too: it is marked, not reopened or doubled.
    onto = found if found is not None and (found.status in OPEN or (found.status == "resolved" and flaps)) else None
    if onto is not None:
        _onto(onto, reading, rule, changed, changes, flaps, now, message, item, ctx, trace)
        return True, onto
    if reading.state == RECOVERY:
        message.outcome = "ignored"
        message.body_html = item.parsed.html_safe
        trace.append(f"ignored: {RECOVERY_NO_TICKET} ({reading.key}); kept, no ticket opened")
        return True, None
    ticket = create_ticket(client_id, message, item, ctx, choice, trace,
                           no_acknowledgement="no acknowledgement: alert mail is never acknowledged")
    # A problem again after the key's last ticket was resolved by its recovery: a state change,
    # carried over so that flapping is seen across tickets.
    carried = changes if found is not None and changed else []
    ticket.alert_key, ticket.alert_state, ticket.alert_count = reading.key, PROBLEM, 1
    ticket.alert_first_at = ticket.alert_last_at = now
    ticket.alert_changes, ticket.alert_flapping = carried, False
    ctx.alerts.tickets[(client_id, reading.key)] = ticket
    trace.append(f"alert: new problem {reading.key!r} on {ticket.reference}"
                 + (f" ({len(carried)} state changes in {rule.flap_minutes} minutes)" if carried else ""))
    return True, ticket


def _onto(ticket: Ticket, reading: AlertReading, rule: AlertRule, changed: bool, changes: list[str], flaps: bool,
          now, message: Message, item: Prepared, ctx, trace: list[str]) -> None:
    """Append an alert mail to the key's ticket, counted; a recovery resolves or marks it."""
    count = (ticket.alert_count or 0) + 1
    since = ticket.alert_first_at or now
    new_status = None
    if reading.state == RECOVERY and ticket.status in OPEN:
        if rule.on_recovery == "resolve":
            new_status = "resolved"
            ticket.resolved_at = now
        else:
            trace.append(f"alert: {ticket.reference} marked recovered; status {ticket.status} unchanged "
                         "(the rule only marks)")
    if reading.state == PROBLEM and ticket.status not in OPEN:
        trace.append(f"alert: flapping ({len(changes)} state changes in {rule.flap_minutes} minutes): "
                     f"appended to {ticket.reference}, marked flapping, not reopened")
    elif flaps and not ticket.alert_flapping:
        trace.append(f"alert: flapping ({len(changes)} state changes in {rule.flap_minutes} minutes): "
                     f"{ticket.reference} marked flapping")
    reason = f"alert {count} since {since:%H:%M} UTC on {ticket.reference}, status {ticket.status} unchanged"
    _append(ticket, message, StatusAction(APPEND, new_status, flag_new_information=changed or flaps, reason=reason),
            ctx, item, trace)
    ticket.alert_state, ticket.alert_count, ticket.alert_last_at = reading.state, count, now
    ticket.alert_changes, ticket.alert_flapping = changes, flaps

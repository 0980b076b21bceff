"""A ticket's service-level clocks, on any object with the ticket's SLA attributes
(`sla_started_at`, `first_response_due_at`, `resolution_due_at`, `first_response_at`,
`resolved_at`, `sla_paused_at`, `sla_paused_minutes`, `sla_sent`, `priority`).

Both clocks start at the server's receive time of the first mail. Waiting on the customer pauses
them, and so does the time a ticket spent resolved before it was reopened: paused business time
is added to the targets, so a due time is always `start + target + paused` in business time and
can be recomputed from scratch whenever the priority or the policy changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from portal.sla.business_time import BusinessHours, BusinessHoursError

CLOCKS = ("response", "resolution")
# What may be sent once per clock: "response_warning", "resolution_breached", ...
THRESHOLDS = ("warning", "breached")


@dataclass(frozen=True)
class Policy:
    hours: BusinessHours
    # Per priority: {"response": minutes, "resolution": minutes}; a missing one has no target.
    targets: dict
    warning_percent: int = 80

    @classmethod
    def read(cls, business_hours: dict, holidays, timezone: str, targets: dict, warning_percent: int = 80) -> Policy:
        for priority, pair in (targets or {}).items():
            if not isinstance(pair, dict) or set(pair) - set(CLOCKS):
                raise BusinessHoursError(f"{priority}: give a response and a resolution target in minutes.")
            for clock, minutes in pair.items():
                if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1):
                    raise BusinessHoursError(f"{priority}: the {clock} target is a whole number of minutes, at least 1.")
        if isinstance(warning_percent, bool) or not isinstance(warning_percent, int) or not 1 <= warning_percent <= 99:
            raise BusinessHoursError("The warning share is a whole number from 1 to 99 (per cent of a target).")
        return cls(BusinessHours.read(business_hours, holidays, timezone), dict(targets or {}), warning_percent)

    def target(self, priority: str, clock: str) -> timedelta | None:
        minutes = (self.targets.get(priority) or {}).get(clock)
        return timedelta(minutes=minutes) if minutes else None


def start(ticket, policy: Policy, at: datetime) -> None:
    ticket.sla_started_at = at
    ticket.sla_paused_at = None
    ticket.sla_paused_minutes = 0
    ticket.sla_sent = []
    recompute(ticket, policy)


def recompute(ticket, policy: Policy | None) -> None:
    """Due times from the start, the targets of the ticket's priority and the paused time; none
    without a policy. A threshold already sent stays sent unless its moment moved later."""
    if policy is None or ticket.sla_started_at is None:
        ticket.first_response_due_at = ticket.resolution_due_at = None
        return
    paused = timedelta(minutes=ticket.sla_paused_minutes or 0)
    before = {clock: _due(ticket, clock) for clock in CLOCKS}
    for clock in CLOCKS:
        target = policy.target(ticket.priority, clock)
        due = policy.hours.add(ticket.sla_started_at, target + paused) if target else None
        setattr(ticket, _DUE[clock], due)
        if before[clock] is not None and (due is None or due > before[clock]):
            # Later than before (a lower priority, a longer target): its warnings may come again.
            ticket.sla_sent = [s for s in (ticket.sla_sent or []) if not s.startswith(clock + "_")]


def pause(ticket, at: datetime) -> None:
    if ticket.sla_started_at is not None and ticket.sla_paused_at is None and ticket.resolved_at is None:
        ticket.sla_paused_at = at


def resume(ticket, policy: Policy | None, at: datetime) -> None:
    if ticket.sla_paused_at is None:
        return
    if policy is not None:
        ticket.sla_paused_minutes = (ticket.sla_paused_minutes or 0) + _minutes(policy.hours.between(ticket.sla_paused_at, at))
    ticket.sla_paused_at = None
    recompute(ticket, policy)


def responded(ticket, at: datetime) -> None:
    """The first public reply stops the response clock (later ones change nothing)."""
    if ticket.first_response_at is None:
        ticket.first_response_at = at


def resolved(ticket, policy: Policy | None, at: datetime) -> None:
    """Resolved stops the resolution clock; a pause under way ends here."""
    if ticket.sla_paused_at is not None:
        resume(ticket, policy, at)
    if ticket.resolved_at is None:
        ticket.resolved_at = at


def reopened(ticket, policy: Policy | None, at: datetime) -> None:
    """The clock goes on where it stopped: the time spent resolved counts as paused."""
    if ticket.resolved_at is None:
        return
    ticket.sla_paused_at = ticket.resolved_at
    ticket.resolved_at = None
    resume(ticket, policy, at)


def stopped_at(ticket, clock: str) -> datetime | None:
    return ticket.first_response_at if clock == "response" else ticket.resolved_at


def left(ticket, policy: Policy, clock: str, now: datetime) -> timedelta | None:
    """Business time left until the clock's due time (negative: overdue by that much); None when
    the clock has no target or has stopped. A paused clock shows what was left when it paused."""
    due = _due(ticket, clock)
    if due is None or stopped_at(ticket, clock) is not None:
        return None
    at = ticket.sla_paused_at or now
    return policy.hours.between(at, due) if at <= due else -policy.hours.between(due, at)


def breached(ticket, clock: str, now: datetime) -> bool:
    """Whether the clock's due time passed before it stopped (or, running, before now)."""
    due = _due(ticket, clock)
    if due is None:
        return False
    end = stopped_at(ticket, clock) or (None if ticket.sla_paused_at else now)
    if end is None:  # paused: breached if it had passed when it paused
        end = ticket.sla_paused_at
    return end > due


def thresholds_reached(ticket, policy: Policy, now: datetime) -> list[str]:
    """The warnings and breaches due by now and not yet sent ("response_warning", ...), for the
    job that sends them; the caller adds each to `sla_sent` when it has been sent."""
    if ticket.sla_started_at is None or ticket.sla_paused_at is not None:
        return []
    sent = set(ticket.sla_sent or [])
    found = []
    paused = timedelta(minutes=ticket.sla_paused_minutes or 0)
    for clock in CLOCKS:
        due, target = _due(ticket, clock), policy.target(ticket.priority, clock)
        if due is None or target is None or stopped_at(ticket, clock) is not None:
            continue
        if f"{clock}_breached" in sent:
            continue
        if now >= due:  # a breach says it all: no warning after it, even if none went out
            found.append(f"{clock}_breached")
            continue
        warn_at = policy.hours.add(ticket.sla_started_at, target * policy.warning_percent / 100 + paused)
        if now >= warn_at and f"{clock}_warning" not in sent:
            found.append(f"{clock}_warning")
    return found


_DUE = {"response": "first_response_due_at", "resolution": "resolution_due_at"}


def _due(ticket, clock: str) -> datetime | None:
    return getattr(ticket, _DUE[clock])


def _minutes(amount: timedelta) -> int:
    return int(amount.total_seconds() // 60)

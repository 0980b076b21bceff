"""The monthly service report of a client (with its sub-clients) or of the whole MSP: per
priority, the tickets created in the month, their first-response and resolution times (median
and 90th percentile, in business time under each ticket's policy and in wall time) and the
share within target of each clock. The page, its chart and its CSV show the same figures.
Reads only."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from markupsafe import Markup
from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.main.charts import Bar, horizontal_bars
from portal.models import Client, SlaPolicy, Ticket
from portal.models.tickets import PRIORITIES
from portal.services.dashboard import percentile
from portal.services.sla import clock_policy
from portal.sla import clock
from portal.sla.clock import CLOCKS, Policy

ALL = "all"
CLOCK_LABELS = {"response": "first response", "resolution": "resolution"}
CSV_HEADER = ("priority", "tickets", "clock", "measured", "business_median_min", "business_p90_min",
              "wall_median_min", "wall_p90_min", "within_target", "with_target", "share_within_target_pct")


class MonthError(ValueError):
    """A month that cannot be read, in words for the picker."""


def read_month(value: str | None, today: date) -> date:
    """The first day of the month picked as YYYY-MM (empty: this month)."""
    if not value:
        return today.replace(day=1)
    try:
        year, month = (int(part) for part in value.split("-"))
        if not 1970 <= year <= 9998:  # a zone's midnight of year 1 or 9999 is out of range in UTC
            raise ValueError(year)
        return date(year, month, 1)
    except ValueError:
        raise MonthError(f"{value!r} is not a month like {today:%Y-%m}.") from None


@dataclass
class ClockFigures:
    business: list[float] = field(default_factory=list)  # minutes, per ticket whose clock stopped
    wall: list[float] = field(default_factory=list)
    met: int = 0
    missed: int = 0  # stopped late, or still running past its due time

    @property
    def with_target(self) -> int:
        return self.met + self.missed

    @property
    def share(self) -> float | None:
        return round(100 * self.met / self.with_target, 1) if self.with_target else None

    def median(self, which: str) -> float | None:
        return _at(getattr(self, which), 0.5)

    def p90(self, which: str) -> float | None:
        return _at(getattr(self, which), 0.9)


def _at(values: list[float], fraction: float) -> float | None:
    return round(percentile(sorted(values), fraction), 1) if values else None


@dataclass
class ReportRow:
    priority: str  # a priority, or ALL
    tickets: int = 0
    clocks: dict[str, ClockFigures] = field(default_factory=lambda: {c: ClockFigures() for c in CLOCKS})


@dataclass
class ServiceReport:
    client: Client
    month: date
    zone: tzinfo
    rows: list[ReportRow]  # the priorities with tickets, then ALL

    @property
    def total(self) -> ReportRow:
        return self.rows[-1]


def month_bounds(month: date, zone: tzinfo) -> tuple[datetime, datetime]:
    nxt = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime(month.year, month.month, 1, tzinfo=zone), datetime(nxt.year, nxt.month, 1, tzinfo=zone)


def service_report(client: Client, month: date, now: datetime) -> ServiceReport:
    """The figures of the tickets created in `month` (in the client's time zone) at the client
    and its sub-clients, or at every client when `client` is the MSP."""
    zone = tenancy.timezone_of(client)
    first, after = month_bounds(month, zone)
    query = select(Ticket).where(Ticket.msp_id == client.msp_id, Ticket.created_at >= first,
                                 Ticket.created_at < after, Ticket.merged_into_id.is_(None))
    if not client.is_msp:
        tree = db.session.execute(select(Client.id, Client.parent_id).where(Client.msp_id == client.msp_id)).all()
        query = query.where(Ticket.client_id.in_({client.id} | tenancy.descendant_ids(tree, client.id)))
    tickets = list(db.session.scalars(query.order_by(Ticket.id)))
    policies = _policies(client.msp_id, {t.sla_policy_id for t in tickets if t.sla_policy_id})
    rows = {p: ReportRow(p) for p in (*PRIORITIES, ALL)}
    for ticket in tickets:
        policy = policies.get(ticket.sla_policy_id)
        for row in (rows.setdefault(ticket.priority, ReportRow(ticket.priority)), rows[ALL]):
            row.tickets += 1
            for name in CLOCKS:
                _count(row.clocks[name], ticket, policy, name, now)
    kept = [r for p, r in rows.items() if p != ALL and r.tickets] + [rows[ALL]]
    return ServiceReport(client, month, zone, kept)


def _policies(msp_id: int, ids: set[int]) -> dict[int, Policy]:
    found = {}
    for row in db.session.scalars(select(SlaPolicy).where(SlaPolicy.msp_id == msp_id, SlaPolicy.id.in_(ids))):
        if (policy := clock_policy(row)) is not None:  # else a hand-edited row: wall time only
            found[row.id] = policy
    return found


def _count(figures: ClockFigures, ticket: Ticket, policy: Policy | None, name: str, now: datetime) -> None:
    start = ticket.sla_started_at or ticket.created_at
    stop = clock.stopped_at(ticket, name)
    if stop is not None:
        figures.wall.append(max(0.0, (stop - start).total_seconds() / 60))
        if policy is not None and ticket.sla_started_at is not None:
            business = policy.hours.between(start, stop).total_seconds() / 60
            if name == "resolution":  # waiting on the customer does not count against it
                business -= ticket.sla_paused_minutes or 0
            figures.business.append(max(0.0, business))
    due = ticket.first_response_due_at if name == "response" else ticket.resolution_due_at
    if due is None:
        return
    if clock.breached(ticket, name, now):
        figures.missed += 1
    elif stop is not None:
        figures.met += 1


# --- what the page, the chart and the CSV show ----------------------------------------------------


def minutes_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def csv_rows(report: ServiceReport) -> list[tuple[str, ...]]:
    """The report's figures as the CSV has them (and the page's table shows them)."""
    out = []
    for row in report.rows:
        for name in CLOCKS:
            f = row.clocks[name]
            out.append((row.priority, str(row.tickets), CLOCK_LABELS[name], str(len(f.wall)),
                        minutes_cell(f.median("business")), minutes_cell(f.p90("business")),
                        minutes_cell(f.median("wall")), minutes_cell(f.p90("wall")), str(f.met), str(f.with_target),
                        "" if f.share is None else f"{f.share:.1f}"))
    return out


def csv_text(report: ServiceReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(report))
    return out.getvalue()


def duration_words(minutes: float | None) -> str:
    if minutes is None:
        return "none measured"
    whole = int(round(minutes))
    days, rest = divmod(whole, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{mins} min"] * bool(mins or not whole)
    return " ".join(parts)


def chart(report: ServiceReport) -> Markup:
    """Per priority and clock: the median business time (bar) and the 90th percentile (whisker)."""
    bars = []
    for row in report.rows:
        for name in CLOCKS:
            f = row.clocks[name]
            median, p90 = f.median("business"), f.p90("business")
            words = f"median {duration_words(median)}, 90% within {duration_words(p90)}" if median is not None \
                else "none measured"
            bars.append(Bar(f"{row.priority}: {CLOCK_LABELS[name]}", median, words, mark=p90))
    return horizontal_bars("service-report", f"Business time to first response and resolution, {report.month:%B %Y}",
                           bars, words_width=250)

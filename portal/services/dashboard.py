"""What the dashboard and the mailboxes list count: open work, failing mailboxes, the job queue
and its workers, mail per mailbox today. Reads only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo

from markupsafe import Markup
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue, Worker
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import joinedload

from portal.extensions import db
from portal.inbound.health import stalled_ids
from portal.inbound.unprocessed import count_waiting
from portal.main.charts import Bar, horizontal_bars
from portal.models import AuditEntry, Client, Mailbox, Message, RawMessage, Ticket
from portal.models.base import utcnow
from portal.outbound.outbox import SENT_AGAIN, outbound_ids
from portal.services.grant_expiry import SignIn, borrowed_apps, sign_in, watched_mailboxes
from portal.services.ticket_list import TODO_STATUSES

# "Open" here is the ticket list's default "to do": the dashboard's numbers link into that list.
OPEN_STATUSES = TODO_STATUSES
# Redis answers in milliseconds when it is up; the page must not hang when it is not.
REDIS_TIMEOUT = 1.0


@dataclass
class OpenRow:
    client: Client
    counts: dict[str, int]
    due_today: int = 0  # service levels: a running clock due before the end of today
    breached: int = 0  # open and past due, or stopped late this month

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class OpenMatrix:
    rows: list[OpenRow]
    totals: dict[str, int]
    statuses: tuple[str, ...] = OPEN_STATUSES
    due_today: int = 0
    breached: int = 0

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def open_tickets(msp_id: int, tz: tzinfo = timezone.utc, now: datetime | None = None) -> OpenMatrix:
    """Open tickets by client and status, and per client the tickets due today and breached
    (service_levels), the busiest client first."""
    found = db.session.execute(
        select(Ticket.client_id, Ticket.status, func.count())
        .where(Ticket.msp_id == msp_id, Ticket.status.in_(OPEN_STATUSES))
        .group_by(Ticket.client_id, Ticket.status)).all()
    by_client: dict[int, dict[str, int]] = {}
    for client_id, status, n in found:
        by_client.setdefault(client_id, dict.fromkeys(OPEN_STATUSES, 0))[status] = n
    levels = service_levels(msp_id, tz, now or utcnow())
    for client_id in levels:
        by_client.setdefault(client_id, dict.fromkeys(OPEN_STATUSES, 0))
    clients = {c.id: c for c in db.session.scalars(
        select(Client).where(Client.msp_id == msp_id, Client.id.in_(by_client)))} if by_client else {}
    rows = [OpenRow(clients[cid], counts, *levels.get(cid, (0, 0))) for cid, counts in by_client.items()
            if cid in clients]
    rows.sort(key=lambda r: (-r.total, -r.breached, r.client.name.lower()))
    totals = {s: sum(r.counts[s] for r in rows) for s in OPEN_STATUSES}
    return OpenMatrix(rows, totals, due_today=sum(r.due_today for r in rows), breached=sum(r.breached for r in rows))


def end_of_day(now: datetime, tz: tzinfo) -> datetime:
    """Midnight at the end of today where the viewer is (a day the clocks change included)."""
    tomorrow = now.astimezone(tz).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=tz)


def start_of_month(now: datetime, tz: tzinfo) -> datetime:
    local = now.astimezone(tz)
    return datetime(local.year, local.month, 1, tzinfo=tz)


def service_levels(msp_id: int, tz: tzinfo, now: datetime) -> dict[int, tuple[int, int]]:
    """Per client id, in one query: (tickets due today, tickets breached). Due today: open, its
    clock running (not paused) with a due time before the end of today where the viewer is,
    overdue ones included. Breached: open and past due (a paused clock: past due when it paused),
    or a clock stopped after its due time this month."""
    end, month = end_of_day(now, tz), start_of_month(now, tz)
    is_open = Ticket.status.in_(OPEN_STATUSES)
    running = [(Ticket.first_response_due_at, Ticket.first_response_at),
               (Ticket.resolution_due_at, Ticket.resolved_at)]
    due_today = and_(is_open, Ticket.sla_paused_at.is_(None),
                     or_(*(and_(stop.is_(None), due < end) for due, stop in running)))
    overdue = or_(*(and_(stop.is_(None), or_(and_(Ticket.sla_paused_at.is_(None), due < now),
                                              due < Ticket.sla_paused_at)) for due, stop in running))
    late = or_(*(and_(stop >= month, stop > due) for due, stop in running))
    breached = or_(and_(is_open, overdue), late)
    found = db.session.execute(
        select(Ticket.client_id, func.sum(case((due_today, 1), else_=0)), func.sum(case((breached, 1), else_=0)))
        .where(Ticket.msp_id == msp_id, Ticket.sla_started_at.is_not(None), or_(due_today, breached))
        .group_by(Ticket.client_id)).all()
    return {client_id: (int(today or 0), int(late_ or 0)) for client_id, today, late_ in found}


@dataclass
class MailboxHealth:
    mailbox: Mailbox
    state: str  # "healthy", "stalled", "failing", "not fetched yet", "draft", "disabled"


def mailbox_health(msp_id: int, now: datetime | None = None) -> list[MailboxHealth]:
    """Every mailbox of the MSP with what a person checks first (its figures: mailbox_figures),
    by address: one query, and one Redis round trip for the overdue ones' fetch locks."""
    mailboxes = list(db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)))
    stalled = stalled_ids(mailboxes, now or utcnow())
    out = []
    for m in mailboxes:
        if m.status != "active":
            state = m.status
        elif m.id in stalled:
            state = "stalled"
        elif m.failure_count:
            state = "failing"
        elif m.last_success_at is None:
            state = "not fetched yet"
        else:
            state = "healthy"
        out.append(MailboxHealth(m, state))
    return out


def failing_mailboxes(health: list[MailboxHealth], now: datetime | None = None) -> list[MailboxHealth]:
    """Of mailbox_health's answer, the active mailboxes that are stalled (no poll completes:
    inbound.health.stalled_ids) or whose last polls failed, the longest stalled or failing first."""
    now = now or utcnow()
    found = [h for h in health if h.state in ("stalled", "failing")]
    found.sort(key=lambda h: (h.mailbox.failing_since or h.mailbox.next_poll_at or now, h.mailbox.address))
    return found


def sign_in_grants(msp_id: int, now: datetime | None = None) -> list[SignIn]:
    """The "Sign-in grants" section: the OAuth2 mailboxes (not disabled) that need a person, a
    reconnect needed first, then the soonest expiry (grant or client secret, 14 days ahead or past)."""
    now = now or utcnow()
    mailboxes = watched_mailboxes(msp_id)
    apps = borrowed_apps(mailboxes)
    found = [s for s in (sign_in(m, now, apps) for m in mailboxes) if s is not None and s.attention]

    def urgency(s: SignIn):
        left = min((e.days_left for e in (s.grant, s.secret) if e), default=0)
        return (s.state != "reconnect needed", left, s.mailbox.address)

    return sorted(found, key=urgency)


def unprocessed_waiting(msp_id: int) -> int:
    return count_waiting(msp_id)


NOT_SENT_SHOWN = 10


@dataclass
class MailNotSent:
    newest: list[Message]
    total: int


def mail_not_sent(msp_id: int, shown: int = NOT_SENT_SHOWN) -> MailNotSent:
    """Outgoing mail a person should look at, newest first: it failed, or it may not have arrived
    (its sending run stopped while the server was taking it); mail on a ticket can be sent again
    there (portal.outbound.outbox.send_again)."""
    ids = outbound_ids(SENT_AGAIN, Message.msp_id == msp_id)
    newest = ids[-shown:]
    rows = list(db.session.scalars(select(Message).where(Message.id.in_(newest)).order_by(Message.id.desc())
                                   .options(joinedload(Message.ticket)))) if newest else []
    return MailNotSent(rows, len(ids))


@dataclass
class WorkerSeen:
    name: str
    state: str
    last_heartbeat: datetime | None


@dataclass
class QueueState:
    reachable: bool
    error: str = ""
    queued: int = 0
    failed: int = 0
    scheduled: int = 0
    workers: list[WorkerSeen] = field(default_factory=list)


_RQ_GENERATED = re.compile(r"[0-9a-f]{32}")


def worker_name(name: str, hostname: str | None, pid: int | None) -> str:
    """What a person recognises: the name the worker was given, else (RQ made up a UUID) the
    machine and process it runs as."""
    if not _RQ_GENERATED.fullmatch(name or "") or not hostname:
        return name
    return f"{hostname}, process {pid}" if pid else hostname


def queue_state(redis_url: str, queue_name: str, *, timeout: float = REDIS_TIMEOUT) -> QueueState:
    """The job queue as Redis sees it: waiting, failed and scheduled jobs, and the workers that
    listen on this queue with their last heartbeat. Never raises: an unreachable Redis is an answer."""
    # No retries either: one quick try, then the page says Redis is unreachable.
    connection = Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                retry=Retry(NoBackoff(), 0))
    try:
        q = Queue(queue_name, connection=connection)
        workers = [WorkerSeen(worker_name(w.name, w.hostname, w.pid), str(w.get_state()), w.last_heartbeat)
                   for w in Worker.all(queue=q)]
        workers.sort(key=lambda w: w.name)
        return QueueState(True, queued=q.count, failed=q.failed_job_registry.count,
                          scheduled=q.scheduled_job_registry.count, workers=workers)
    except (RedisError, OSError) as exc:
        return QueueState(False, error=str(exc)[:200] or type(exc).__name__)
    finally:
        connection.close()


# --- per mailbox: how late its fetching is and how much mail came today ---------------------------


def in_words(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return "less than a minute"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return ""  # not reached


def duration_in_words(delta: timedelta) -> str:
    """As in_words, but to the second below a minute (pushed mail becomes a ticket in seconds)."""
    seconds = max(0.0, delta.total_seconds())
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    return in_words(delta)


@dataclass
class MailboxFigures:
    messages_today: int = 0
    lag: timedelta | None = None  # since the last successful poll; None = never fetched
    late: bool = False

    @property
    def lag_words(self) -> str:
        return "never fetched" if self.lag is None else in_words(self.lag)


def start_of_day(now: datetime, tz: tzinfo) -> datetime:
    """Midnight of today where the viewer is, as an aware time."""
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def mailbox_figures(msp_id: int, tz: tzinfo, now: datetime | None = None,
                    mailboxes: list[Mailbox] | None = None) -> dict[int, MailboxFigures]:
    """Per mailbox id: mail fetched since midnight in `tz` (one grouped query) and the fetch lag.
    Late = active, and no successful poll for three poll intervals (at least five minutes).
    `mailboxes`: the MSP's, when the caller loaded them already (else read here)."""
    now = now or utcnow()
    counts = dict(db.session.execute(
        select(RawMessage.mailbox_id, func.count())
        .where(RawMessage.msp_id == msp_id, RawMessage.mailbox_id.is_not(None),
               RawMessage.fetched_at >= start_of_day(now, tz))
        .group_by(RawMessage.mailbox_id)).all())
    rows = ([(m.id, m.status, m.poll_interval, m.last_success_at) for m in mailboxes] if mailboxes is not None else
            db.session.execute(select(Mailbox.id, Mailbox.status, Mailbox.poll_interval, Mailbox.last_success_at)
                               .where(Mailbox.msp_id == msp_id)))
    figures = {}
    for box_id, status, interval, last in rows:
        lag = now - last if last else None
        allowed = timedelta(seconds=max(300, 3 * (interval or 60)))
        figures[box_id] = MailboxFigures(counts.get(box_id, 0), lag,
                                         status == "active" and lag is not None and lag > allowed)
    return figures


# --- time to ticket per mailbox: from the mail's arrival to its ticket ------------------------------

TIME_TO_TICKET_DAYS = 7
TIME_TO_TICKET_ROWS = 2000  # per mailbox, the latest fetched: enough for a median, never a whole table


@dataclass(frozen=True)
class TimeToTicket:
    count: int  # messages measured
    median: timedelta
    p90: timedelta


@dataclass(frozen=True)
class TimeToTicketToday:
    """A mailbox's time to ticket over today's mail: the mailbox page and /metrics."""

    count: int
    p50: timedelta
    p95: timedelta
    total: timedelta  # all the waits added up (Prometheus' _sum)


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values lie, interpolated between the two
    nearest (as PostgreSQL's percentile_cont does)."""
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ticket_waits(msp_id: int | None, since: datetime, *, rows: int = TIME_TO_TICKET_ROWS, by_date: bool = False,
                 mailbox_id: int | None = None) -> dict[int, list[float]]:
    """Per mailbox id, sorted seconds from each email's arrival to its ticket change, for the mail
    fetched since `since` that opened a ticket or went onto one (the latest `rows` of each
    mailbox). The ticket change is the ticket's creation or the message's recording on it,
    whichever is later. The arrival is the mail server's receive time (IMAP INTERNALDATE, Graph
    receivedDateTime, the LMTP DATA); where the server gave none (POP3), the fetch, or with
    `by_date` the email's Date header when it is not after the fetch. Nothing counts below zero.
    `msp_id` None: every MSP's (the operator's /metrics)."""
    scope = [] if msp_id is None else [RawMessage.msp_id == msp_id, Message.msp_id == msp_id, Ticket.msp_id == msp_id]
    if mailbox_id is not None:
        scope.append(RawMessage.mailbox_id == mailbox_id)
    latest = (select(RawMessage.mailbox_id, RawMessage.received_at, Message.sent_at, RawMessage.fetched_at,
                     Message.created_at, Ticket.created_at.label("opened_at"),
                     func.row_number().over(partition_by=RawMessage.mailbox_id,
                                            order_by=(RawMessage.fetched_at.desc(), RawMessage.id.desc())).label("n"))
              .join(Message, Message.raw_message_id == RawMessage.id)
              .join(Ticket, Ticket.id == Message.ticket_id)
              .where(*scope, RawMessage.mailbox_id.is_not(None), Message.direction == "in",
                     RawMessage.fetched_at >= since)
              .subquery())
    waits: dict[int, list[float]] = {}
    for box_id, received, sent, fetched, recorded, opened, _n in db.session.execute(
            select(latest).where(latest.c.n <= rows)):
        if received is not None:
            start = received
        elif by_date and sent is not None and sent <= fetched:
            start = sent
        else:
            start = fetched
        waits.setdefault(box_id, []).append(max(0.0, (max(recorded, opened) - start).total_seconds()))
    for seconds in waits.values():
        seconds.sort()
    return waits


def time_to_ticket(msp_id: int, now: datetime | None = None, days: int = TIME_TO_TICKET_DAYS,
                   rows: int = TIME_TO_TICKET_ROWS) -> dict[int, TimeToTicket]:
    """Per mailbox id, the median and 90th percentile of ticket_waits over the mail fetched in
    the last `days` days; where the server gave no receive time, from the Date header."""
    now = now or utcnow()
    return {box_id: TimeToTicket(len(seconds), timedelta(seconds=percentile(seconds, 0.5)),
                                 timedelta(seconds=percentile(seconds, 0.9)))
            for box_id, seconds in ticket_waits(msp_id, now - timedelta(days=days), rows=rows, by_date=True).items()}


def time_to_ticket_today(msp_id: int | None, tz: tzinfo, now: datetime | None = None, *,
                         mailbox_id: int | None = None, rows: int = TIME_TO_TICKET_ROWS) -> dict[int, TimeToTicketToday]:
    """Per mailbox id, p50 and p95 of ticket_waits over the mail fetched since midnight in `tz`
    (from the receive time, else the fetch)."""
    now = now or utcnow()
    waits = ticket_waits(msp_id, start_of_day(now, tz), rows=rows, mailbox_id=mailbox_id)
    return {box_id: TimeToTicketToday(len(seconds), timedelta(seconds=percentile(seconds, 0.5)),
                                      timedelta(seconds=percentile(seconds, 0.95)), timedelta(seconds=sum(seconds)))
            for box_id, seconds in waits.items()}

TICKET_TIME_WORDS_W = 250  # "median 3 minutes, 90% within 12 minutes" at the charts' 11 px


def time_to_ticket_chart(msp_id: int, health: list[MailboxHealth], now: datetime | None = None) -> Markup | None:
    """Median (bar) and 90th percentile (whisker) from an email's arrival to its ticket, per active
    mailbox and any other that fetched mail in those days; None without one."""
    times = time_to_ticket(msp_id, now)
    bars = []
    for h in health:
        t = times.get(h.mailbox.id)
        if t is None and h.mailbox.status != "active":
            continue
        words = f"median {in_words(t.median)}, 90% within {in_words(t.p90)}" if t else "no mail became a ticket"
        bars.append(Bar(h.mailbox.address, t.median.total_seconds() if t else None, words,
                        mark=t.p90.total_seconds() if t else None))
    return horizontal_bars("ticket-time", "Time from an email's arrival to its ticket", bars,
                           words_width=TICKET_TIME_WORDS_W) if bars else None


def lag_chart(health: list[MailboxHealth], figures: dict[int, MailboxFigures]) -> Markup | None:
    """How long since each active mailbox last fetched without error; None without one."""
    bars = [Bar(h.mailbox.address, f.lag.total_seconds() if f.lag else None,
                f.lag_words + (" (late)" if f.late else ""), f.late)
            for h in health if h.mailbox.status == "active" and (f := figures.get(h.mailbox.id)) is not None]
    return horizontal_bars("fetch-lag", "Time since each mailbox's last good fetch", bars) if bars else None


# --- tickets opened and closed per day per client -------------------------------------------------

CHART_DAYS = 30
CHART_CLIENTS = 8  # the busiest; more charts than that is a list nobody reads


@dataclass
class ClientDays:
    client: Client
    opened: list[int]
    closed: list[int]

    @property
    def total(self) -> int:
        return sum(self.opened) + sum(self.closed)


def tickets_per_day(msp_id: int, tz: tzinfo, now: datetime | None = None,
                    days: int = CHART_DAYS) -> tuple[list[date], list[ClientDays]]:
    """The last `days` days (today included, where the viewer is) and, per client with any,
    the tickets opened (created) and closed (a status change to closed in the ticket's history)
    each day; the busiest clients first."""
    now = now or utcnow()
    first = start_of_day(now, tz) - timedelta(days=days - 1)
    day_list = [first.date() + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    counts: dict[int, ClientDays] = {}

    def count(client_id: int, at: datetime, which: str) -> None:
        i = index.get(at.astimezone(tz).date())
        if i is not None:
            row = counts.setdefault(client_id, ClientDays(None, [0] * days, [0] * days))  # type: ignore[arg-type]
            getattr(row, which)[i] += 1

    for client_id, created in db.session.execute(
            select(Ticket.client_id, Ticket.created_at).where(Ticket.msp_id == msp_id, Ticket.created_at >= first)):
        count(client_id, created, "opened")
    # A change to closed: the history's status [before, after] with "closed" after, chosen by the
    # database (SQLite's json_extract, PostgreSQL's #>>), not by reading every change here.
    for client_id, at in db.session.execute(
            select(Ticket.client_id, AuditEntry.at)
            .join(Ticket, Ticket.id == AuditEntry.record_id)
            .where(AuditEntry.msp_id == msp_id, AuditEntry.record_type == "ticket", AuditEntry.at >= first,
                   Ticket.msp_id == msp_id, AuditEntry.changes[("status", 1)].as_string() == "closed")):
        count(client_id, at, "closed")
    clients = {c.id: c for c in db.session.scalars(
        select(Client).where(Client.id.in_(counts), Client.msp_id == msp_id))} \
        if counts else {}
    rows = []
    for client_id, row in counts.items():
        if client_id in clients:
            row.client = clients[client_id]
            rows.append(row)
    rows.sort(key=lambda r: (-r.total, r.client.name.lower()))
    return day_list, rows[:CHART_CLIENTS]

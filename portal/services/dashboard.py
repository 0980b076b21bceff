"""What the dashboard and the mailboxes list count: open work, failing mailboxes, the job queue
and its workers, mail per mailbox today. Reads only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue, Worker
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.health import stalled_ids
from portal.inbound.unprocessed import count_waiting
from portal.models import AuditEntry, Client, Mailbox, RawMessage, Ticket
from portal.models.base import utcnow
from portal.services.grant_expiry import SignIn, sign_in, watched_mailboxes
from portal.services.ticket_list import TODO_STATUSES

# "Open" here is the ticket list's default "to do": the dashboard's numbers link into that list.
OPEN_STATUSES = TODO_STATUSES
# Redis answers in milliseconds when it is up; the page must not hang when it is not.
REDIS_TIMEOUT = 1.0


@dataclass
class OpenRow:
    client: Client
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class OpenMatrix:
    rows: list[OpenRow]
    totals: dict[str, int]
    statuses: tuple[str, ...] = OPEN_STATUSES

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def open_tickets(msp_id: int) -> OpenMatrix:
    """Open tickets by client and status, the busiest client first."""
    found = db.session.execute(
        select(Ticket.client_id, Ticket.status, func.count())
        .where(Ticket.msp_id == msp_id, Ticket.status.in_(OPEN_STATUSES))
        .group_by(Ticket.client_id, Ticket.status)).all()
    by_client: dict[int, dict[str, int]] = {}
    for client_id, status, n in found:
        by_client.setdefault(client_id, dict.fromkeys(OPEN_STATUSES, 0))[status] = n
    clients = {c.id: c for c in db.session.scalars(
        select(Client).where(Client.msp_id == msp_id, Client.id.in_(by_client)))} if by_client else {}
    rows = [OpenRow(clients[cid], counts) for cid, counts in by_client.items() if cid in clients]
    rows.sort(key=lambda r: (-r.total, r.client.name.lower()))
    totals = {s: sum(r.counts[s] for r in rows) for s in OPEN_STATUSES}
    return OpenMatrix(rows, totals)


@dataclass
class MailboxHealth:
    mailbox: Mailbox
    state: str  # "healthy", "stalled", "failing", "not fetched yet", "draft", "disabled"


def mailbox_health(msp_id: int) -> list[MailboxHealth]:
    """Every mailbox of the MSP with what a person checks first (its figures: mailbox_figures)."""
    out = []
    mailboxes = list(db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id).order_by(Mailbox.address)))
    stalled = stalled_ids(mailboxes, utcnow())
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


def failing_mailboxes(msp_id: int, now: datetime | None = None) -> list[MailboxHealth]:
    """Active mailboxes that are stalled (no poll completes: inbound.health.stalled_ids) or whose
    last polls failed, the longest stalled or failing first."""
    now = now or utcnow()
    found = []
    mailboxes = list(db.session.scalars(select(Mailbox).where(Mailbox.msp_id == msp_id, Mailbox.status == "active")))
    stalled = stalled_ids(mailboxes, now)
    for m in mailboxes:
        if m.id in stalled:
            found.append(MailboxHealth(m, "stalled"))
        elif m.failure_count:
            found.append(MailboxHealth(m, "failing"))
    found.sort(key=lambda h: (h.mailbox.failing_since or h.mailbox.next_poll_at or now, h.mailbox.address))
    return found


def sign_in_grants(msp_id: int, now: datetime | None = None) -> list[SignIn]:
    """The "Sign-in grants" section: the OAuth2 mailboxes (not disabled) that need a person, a
    reconnect needed first, then the soonest expiry (grant or client secret, 14 days ahead or past)."""
    now = now or utcnow()
    found = [s for s in (sign_in(m, now) for m in watched_mailboxes(msp_id)) if s is not None and s.attention]

    def urgency(s: SignIn):
        left = min((e.days_left for e in (s.grant, s.secret) if e), default=0)
        return (s.state != "reconnect needed", left, s.mailbox.address)

    return sorted(found, key=urgency)


def unprocessed_waiting(msp_id: int) -> int:
    return count_waiting(msp_id)


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


def mailbox_figures(msp_id: int, tz: tzinfo, now: datetime | None = None) -> dict[int, MailboxFigures]:
    """Per mailbox id: mail fetched since midnight in `tz` (one grouped query) and the fetch lag.
    Late = active, and no successful poll for three poll intervals (at least five minutes)."""
    now = now or utcnow()
    counts = dict(db.session.execute(
        select(RawMessage.mailbox_id, func.count())
        .where(RawMessage.msp_id == msp_id, RawMessage.mailbox_id.is_not(None),
               RawMessage.fetched_at >= start_of_day(now, tz))
        .group_by(RawMessage.mailbox_id)).all())
    figures = {}
    for box_id, status, interval, last in db.session.execute(
            select(Mailbox.id, Mailbox.status, Mailbox.poll_interval, Mailbox.last_success_at)
            .where(Mailbox.msp_id == msp_id)):
        lag = now - last if last else None
        allowed = timedelta(seconds=max(300, 3 * (interval or 60)))
        figures[box_id] = MailboxFigures(counts.get(box_id, 0), lag,
                                         status == "active" and lag is not None and lag > allowed)
    return figures


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
    for client_id, at, changes in db.session.execute(
            select(Ticket.client_id, AuditEntry.at, AuditEntry.changes)
            .join(Ticket, Ticket.id == AuditEntry.record_id)
            .where(AuditEntry.msp_id == msp_id, AuditEntry.record_type == "ticket", AuditEntry.at >= first,
                   Ticket.msp_id == msp_id)):
        status = (changes or {}).get("status")
        if isinstance(status, list) and len(status) == 2 and status[1] == "closed":
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

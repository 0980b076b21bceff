"""The operator's /metrics, in Prometheus' text format: per mailbox, today's time to ticket
(p50, p95, sum and count, from the mail server's receive time) and the fetch health counts.
Mailboxes are named by id only: no MSP, client or address appears here."""

from __future__ import annotations

from datetime import datetime, timezone

from redis.exceptions import RedisError
from sqlalchemy import func, select

from portal.extensions import db
from portal.inbound.health import stalled_ids
from portal.models import Mailbox, RawMessage
from portal.models.mailboxes import MAILBOX_STATUSES
from portal.services.dashboard import time_to_ticket_today

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    return repr(round(float(value), 3))


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, words: str) -> None:
        self.lines += [f"# HELP {name} {words}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")


def metrics_text(now: datetime) -> str:
    out = _Text()
    times = time_to_ticket_today(None, timezone.utc, now)
    out.family("tidemark_time_to_ticket_seconds", "summary",
               "From the mail server's receive time (else the fetch) to the ticket change, mail fetched today (UTC)")
    for box_id in sorted(times):
        t = times[box_id]
        out.sample("tidemark_time_to_ticket_seconds", t.p50.total_seconds(), mailbox=str(box_id), quantile="0.5")
        out.sample("tidemark_time_to_ticket_seconds", t.p95.total_seconds(), mailbox=str(box_id), quantile="0.95")
        out.sample("tidemark_time_to_ticket_seconds_sum", t.total.total_seconds(), mailbox=str(box_id))
        out.sample("tidemark_time_to_ticket_seconds_count", t.count, mailbox=str(box_id))

    by_status = dict(db.session.execute(select(Mailbox.status, func.count()).group_by(Mailbox.status)).all())
    out.family("tidemark_mailboxes", "gauge", "Mailboxes by status")
    for status in MAILBOX_STATUSES:
        out.sample("tidemark_mailboxes", by_status.get(status, 0), status=status)

    active = list(db.session.scalars(select(Mailbox).where(Mailbox.status == "active", Mailbox.direction != "outgoing")
                                     .order_by(Mailbox.id)))
    out.family("tidemark_mailbox_failures", "gauge", "Failed polls in a row of each active mailbox")
    for mailbox in active:
        out.sample("tidemark_mailbox_failures", mailbox.failure_count, mailbox=str(mailbox.id))
    out.family("tidemark_mailbox_last_success_age_seconds", "gauge",
               "Seconds since each active mailbox's last good fetch (absent: none yet)")
    for mailbox in active:
        if mailbox.last_success_at is not None:
            out.sample("tidemark_mailbox_last_success_age_seconds",
                       (now - mailbox.last_success_at).total_seconds(), mailbox=str(mailbox.id))
    out.family("tidemark_mailboxes_failing", "gauge", "Active mailboxes whose last poll failed")
    out.sample("tidemark_mailboxes_failing", sum(1 for m in active if m.failure_count))
    try:
        stalled: float = len(stalled_ids(active, now))
    except RedisError:
        stalled = float("nan")  # the fetch locks live in Redis: unknown while it is away
    out.family("tidemark_mailboxes_stalled", "gauge", "Active mailboxes overdue with no fetch under way")
    out.sample("tidemark_mailboxes_stalled", stalled)

    waiting = dict(db.session.execute(select(RawMessage.state, func.count()).where(
        RawMessage.state.in_(("new", "failed"))).group_by(RawMessage.state)).all())
    out.family("tidemark_raw_messages_waiting", "gauge", "Stored mail not decided yet (new) or failed")
    for state in ("new", "failed"):
        out.sample("tidemark_raw_messages_waiting", waiting.get(state, 0), state=state)
    return "\n".join(out.lines) + "\n"

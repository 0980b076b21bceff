from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify
from flask_login import current_user
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import func, select, text

from portal.display import viewer_timezone
from portal.extensions import db
from portal.jobs import queue, redis_connection
from portal.main.charts import Bar, Series, daily_bars, horizontal_bars
from portal.models import Client, User
from portal.outbound.settings import may_change_installation
from portal.responses import render_page
from portal.services import dashboard as board
from portal.services.first_run import checklist

bp = Blueprint("main", __name__)


@bp.get("/")
def dashboard():
    """The MSP at a glance; the figures part refreshes itself every 30 s (htmx polling)."""
    clients = db.session.scalar(select(func.count()).select_from(Client).where(Client.msp_id == g.msp_id))
    users = db.session.scalar(select(func.count()).select_from(User).where(User.msp_id == g.msp_id))
    cfg = current_app.config
    return render_page("main/dashboard.html", "main/_dashboard.html", client_count=clients, user_count=users,
                       open=board.open_tickets(g.msp_id), failing=board.failing_mailboxes(g.msp_id),
                       sign_ins=board.sign_in_grants(g.msp_id),
                       unprocessed=board.unprocessed_waiting(g.msp_id),
                       jobs=board.queue_state(cfg["REDIS_URL"], cfg["TIDEMARK_QUEUE"]),
                       first_run=checklist(g.msp_id), charts=_ticket_charts(), lag_chart=_lag_chart(),
                       gateway_allowed=may_change_installation(current_user, cfg["TIDEMARK_OPERATORS"]))


def _ticket_charts() -> list[tuple[Client, object]]:
    days, rows = board.tickets_per_day(g.msp_id, viewer_timezone())
    return [(row.client, daily_bars(f"chart-{row.client.id}", f"Tickets opened and closed at {row.client.name}", days,
                                    [Series("opened", row.opened), Series("closed", row.closed)]))
            for row in rows]


def _lag_chart():
    """How long since each active mailbox last fetched without error; None without one."""
    figures = board.mailbox_figures(g.msp_id, viewer_timezone())
    bars = [Bar(h.mailbox.address, f.lag.total_seconds() if f.lag else None,
                f.lag_words + (" (late)" if f.late else ""), f.late)
            for h in board.mailbox_health(g.msp_id) if h.mailbox.status == "active"
            for f in [figures[h.mailbox.id]]]
    return horizontal_bars("fetch-lag", "Time since each mailbox's last good fetch", bars) if bars else None


def _health() -> dict:
    state: dict = {"database": {"ok": True}, "redis": {"ok": True}, "workers": 0, "queued": None}
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure is the answer here
        db.session.rollback()
        state["database"] = {"ok": False, "error": str(exc).splitlines()[0][:200]}
    try:
        connection = redis_connection()
        connection.ping()
        state["workers"] = Worker.count(connection=connection)
        state["queued"] = queue(connection).count
    except (RedisError, OSError) as exc:
        state["redis"] = {"ok": False, "error": str(exc)[:200]}
    state["status"] = "ok" if state["database"]["ok"] and state["redis"]["ok"] else "degraded"
    return state


@bp.get("/healthz")
def healthz():
    state = _health()
    state["jobs_sync"] = bool(current_app.config["TIDEMARK_JOBS_SYNC"])
    return jsonify(state), 200 if state["status"] == "ok" else 503

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from flask_login import current_user
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import func, select, text

from portal.display import viewer_timezone
from portal.extensions import db
from portal.jobs import queue, redis_connection
from portal.main.charts import Series, daily_bars
from portal.models import Client, User
from portal.models.base import utcnow
from portal.outbound.settings import may_change_installation
from portal.responses import render_page
from portal.services import dashboard as board
from portal.services.first_run import checklist
from portal.services.metrics import CONTENT_TYPE, metrics_text

bp = Blueprint("main", __name__)


@bp.get("/")
def dashboard():
    """The MSP at a glance; the figures part refreshes itself every 30 s (htmx polling)."""
    clients = db.session.scalar(select(func.count()).select_from(Client).where(Client.msp_id == g.msp_id))
    users = db.session.scalar(select(func.count()).select_from(User).where(User.msp_id == g.msp_id))
    cfg = current_app.config
    now, tz = utcnow(), viewer_timezone()
    health = board.mailbox_health(g.msp_id, now)  # the mailboxes read once, for the failing ones and the lag
    figures = board.mailbox_figures(g.msp_id, tz, now, mailboxes=[h.mailbox for h in health])
    return render_page("main/dashboard.html", "main/_dashboard.html", client_count=clients, user_count=users,
                       open=board.open_tickets(g.msp_id, tz, now), failing=board.failing_mailboxes(health, now),
                       sign_ins=board.sign_in_grants(g.msp_id, now),
                       unprocessed=board.unprocessed_waiting(g.msp_id), not_sent=board.mail_not_sent(g.msp_id),
                       jobs=board.queue_state(cfg["REDIS_URL"], cfg["TIDEMARK_QUEUE"]),
                       first_run=checklist(g.msp_id), charts=_ticket_charts(tz, now),
                       lag_chart=board.lag_chart(health, figures),
                       ticket_time_chart=board.time_to_ticket_chart(g.msp_id, health, now),
                       ticket_time_days=board.TIME_TO_TICKET_DAYS,
                       gateway_allowed=may_change_installation(current_user, cfg["TIDEMARK_OPERATORS"]))


def _ticket_charts(tz, now) -> list[tuple[Client, object]]:
    days, rows = board.tickets_per_day(g.msp_id, tz, now)
    return [(row.client, daily_bars(f"chart-{row.client.id}", f"Tickets opened and closed at {row.client.name}", days,
                                    [Series("opened", row.opened), Series("closed", row.closed)]))
            for row in rows]


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


@bp.get("/metrics")
def metrics():
    """Prometheus' text format for the operator, behind TIDEMARK_METRICS_TOKEN (a bearer token,
    compared in constant time); without that setting there is no such page."""
    token = current_app.config["TIDEMARK_METRICS_TOKEN"]
    if not token:
        abort(404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return Response("a bearer token is needed\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    return Response(metrics_text(utcnow()), content_type=CONTENT_TYPE)

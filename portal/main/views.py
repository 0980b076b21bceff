from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, render_template
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import func, select, text

from portal.extensions import db
from portal.jobs import queue, redis_connection
from portal.models import Client, User

bp = Blueprint("main", __name__)


@bp.get("/")
def dashboard():
    clients = db.session.scalar(select(func.count()).select_from(Client).where(Client.msp_id == g.msp_id))
    users = db.session.scalar(select(func.count()).select_from(User).where(User.msp_id == g.msp_id))
    return render_template("main/dashboard.html", client_count=clients, user_count=users,
                           health=_health())


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

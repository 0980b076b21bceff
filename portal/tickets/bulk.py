"""One change on many tickets from the list: status, assignee or priority. Each ticket goes
through the same service path as a change on its own page, so each is in its own history."""

from __future__ import annotations

from flask import flash, g, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.responses import hx_redirect
from portal.services import ValidationError
from portal.services import tickets as svc
from portal.tickets import views
from portal.tickets.blueprint import bp


def _list_url() -> str:
    # The form posts to /tickets/bulk?<the list's own query>: go back to that same list.
    query = request.query_string.decode("utf-8", "replace")
    return url_for("tickets.index") + (f"?{query}" if query else "")


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary(result: svc.BulkResult) -> str:
    parts = [f"{_plural(len(result.updated), 'ticket', 'tickets')} updated."]
    if result.unchanged:
        parts.append(f"{_plural(len(result.unchanged), 'ticket was', 'tickets were')} already so.")
    if result.ignored:
        parts.append(f"{_plural(len(result.ignored), 'selected ticket was', 'selected tickets were')} "
                     "not found and left alone.")
    return " ".join(parts)


@bp.post("/bulk")
def bulk():
    change = svc.BulkChange(status=request.form.get("status", ""), priority=request.form.get("priority", ""),
                            assignee=request.form.get("assignee", ""))
    selected = request.form.getlist("ticket")
    try:
        result = svc.bulk_update(g.msp_id, selected, change, current_user)
    except ValidationError as exc:
        db.session.rollback()
        # The list as it was asked for, with the selection kept and the messages by the fields.
        g.bulk = {"errors": exc.errors, "values": change, "selected": set(selected)}
        return views.index(), 422
    flash(summary(result), "success" if not result.ignored else "warning")
    return hx_redirect(_list_url())


@bp.context_processor
def bulk_context():
    # The list fragment is drawn by index() and, with errors, by bulk(): both get these.
    return {"bulk": g.get("bulk") or {}, "bulk_assignees": lambda: svc.assignable_users(g.msp_id)}

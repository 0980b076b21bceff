"""The ticket's own fields on its page: priority, assignee and type, and the history of every
change made to them (and to its status)."""

from __future__ import annotations

from flask import flash, render_template, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.responses import hx_redirect, render_page
from portal.services import ValidationError, commit
from portal.services import tickets as svc
from portal.tickets.views import _detail_context, _ticket_or_404, bp

CHANGES_PAGE = 20


def changes_context(ticket, page: int = 1) -> dict:
    entries, total = svc.ticket_changes(ticket, page=page, per_page=CHANGES_PAGE)
    return dict(history=entries, history_total=total, history_page=page,
                history_pages=max(1, -(-total // CHANGES_PAGE)))


def fields_context(ticket) -> dict:
    """What the fields form offers: the MSP's users (and a disabled one still holding the ticket)."""
    users = svc.assignable_users(ticket.msp_id)
    current = svc.assignee_of(ticket)
    if current is not None and current not in users:
        users.append(current)
    return dict(assignees=users, priorities=svc.PRIORITIES, types=svc.types_in_use(ticket.msp_id),
                **changes_context(ticket))


@bp.post("/<reference>/fields")
def fields(reference: str):
    ticket = _ticket_or_404(reference)
    data = svc.FieldsInput(priority=request.form.get("priority", ""), assignee=request.form.get("assignee", ""),
                           type=request.form.get("type", ""))
    try:
        changed = svc.update_fields(ticket, data, current_user)
    except ValidationError as exc:
        db.session.rollback()
        ticket = _ticket_or_404(reference)
        return render_template("tickets/detail.html", **_detail_context(ticket), fields_form=data,
                               fields_errors=exc.errors), 422
    commit()
    flash(f"{ticket.reference}: {', '.join(changed)} changed." if changed else "Nothing changed.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/changes")
def changes(reference: str):
    ticket = _ticket_or_404(reference)
    page = max(1, request.args.get("page", 1, type=int))
    return render_page("tickets/changes.html", "tickets/_changes.html", ticket=ticket, **changes_context(ticket, page))

"""The ticket's own fields on its page: priority, assignee and type, and the history of every
change made to them (and to its status)."""

from __future__ import annotations

from flask import flash, render_template, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.responses import hx_redirect, render_page
from portal.services import ValidationError, commit
from portal.services import tickets as svc
from portal.tickets import bp
from portal.tickets.page import changes_context, detail_context, ticket_or_404


@bp.post("/<reference>/fields")
def fields(reference: str):
    ticket = ticket_or_404(reference)
    data = svc.FieldsInput(priority=request.form.get("priority", ""), assignee=request.form.get("assignee", ""),
                           type=request.form.get("type", ""))
    try:
        changed = svc.update_fields(ticket, data, current_user)
    except ValidationError as exc:
        db.session.rollback()
        ticket = ticket_or_404(reference)
        return render_template("tickets/detail.html", **detail_context(ticket), fields_form=data,
                               fields_errors=exc.errors), 422
    commit()
    flash(f"{ticket.reference}: {', '.join(changed)} changed." if changed else "Nothing changed.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/changes")
def changes(reference: str):
    ticket = ticket_or_404(reference)
    page = max(1, request.args.get("page", 1, type=int))
    return render_page("tickets/changes.html", "tickets/_changes.html", ticket=ticket, **changes_context(ticket, page))

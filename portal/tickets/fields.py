"""The ticket's own fields on its page: status, priority, assignee and type in one form (one
change in the history), "Assign to me" (on the page and in the list), and the history of every
change made to them."""

from __future__ import annotations

from flask import flash, request, url_for
from flask_htmx.responses import make_response
from flask_login import current_user

from portal.responses import hx_redirect, render_page
from portal.services import ValidationError
from portal.services import tickets as svc
from portal.tickets.blueprint import bp
from portal.tickets.forms import FieldsForm
from portal.tickets.page import CHANGED, changes_context, form_error, fragment_wanted, parts, ticket_or_404


@bp.post("/<reference>/fields")
def fields(reference: str):
    ticket = ticket_or_404(reference)
    form = FieldsForm()
    try:
        changed = svc.update_fields(ticket, form.values(), current_user)
    except ValidationError as exc:
        form.service_errors = exc.errors
        return form_error(reference, "tickets/_fields.html", fields_form=form)
    flash(f"{ticket.reference}: {', '.join(changed)} changed." if changed else "Nothing changed.", "success")
    if fragment_wanted():
        # The facts at the top come along; the history of changes refreshes itself on the trigger.
        return parts(ticket, "tickets/_fields.html", "tickets/_facts.html", trigger=CHANGED)
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.post("/<reference>/assign-to-me")
def assign_to_me(reference: str):
    ticket = ticket_or_404(reference)
    svc.change_assignee(ticket, current_user, current_user)
    if request.args.get("from") == "list":
        if fragment_wanted():
            return make_response("", 204, trigger=CHANGED)  # the list refreshes itself, keeping its filters
        args = {k: v for k, v in request.args.items() if k != "from"}
        return hx_redirect(url_for("tickets.index", **args))
    flash(f"{ticket.reference} is assigned to you.", "success")
    if fragment_wanted():
        return parts(ticket, "tickets/_fields.html", "tickets/_facts.html", trigger=CHANGED)
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/changes")
def changes(reference: str):
    ticket = ticket_or_404(reference)
    page = max(1, request.args.get("page", 1, type=int))
    return render_page("tickets/changes.html", "tickets/_changes.html", ticket=ticket, **changes_context(ticket, page))

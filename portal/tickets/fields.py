"""The ticket's own fields on its page: status, priority, assignee and type in one form (one
change in the history), "Assign to me" (on the page and in the list), and the history of every
change made to them."""

from __future__ import annotations

from flask import abort, flash, g, request, url_for
from flask_htmx.responses import make_response
from flask_login import current_user

from portal.responses import hx_redirect, render_page
from portal.services import ValidationError, sla, sla_alerts
from portal.services import custom_fields as cf_svc
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


@bp.post("/<reference>/custom-fields")
def custom_fields(reference: str):
    """The MSP's custom fields on the ticket: each value checked against its field's kind, the
    changes one entry in the ticket's history."""
    ticket = ticket_or_404(reference)
    fields = cf_svc.list_fields(ticket.msp_id)
    posted = {f.id: request.form.get(f"cf{f.id}", "") for f in fields if f"cf{f.id}" in request.form}
    try:
        changed = cf_svc.update_ticket_values(ticket, posted, current_user)
    except ValidationError as exc:
        return form_error(reference, "tickets/_custom_fields.html",
                          custom_values={f"cf{f.id}": request.form.get(f"cf{f.id}", "") for f in fields},
                          custom_errors=exc.errors)
    flash(f"{ticket.reference}: {', '.join(changed)} changed." if changed else "Nothing changed.", "success")
    if fragment_wanted():
        return parts(ticket, "tickets/_custom_fields.html", trigger=CHANGED)
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


@bp.post("/<reference>/sla")
def sla_policy(reference: str):
    """Give the ticket another SLA policy (or none): its due times follow; in its history."""
    ticket = ticket_or_404(reference)
    chosen = request.form.get("sla_policy_id", "")
    policy = None
    if chosen:
        policy = sla.get_policy(g.msp_id, int(chosen)) if chosen.isascii() and chosen.isdigit() and len(chosen) <= 12 else None
        if policy is None:
            abort(404)
    before = sla_alerts.due_times(ticket)
    changed = sla.change_ticket_policy(ticket, policy, current_user)
    if changed:
        sla_alerts.sla_changed(ticket, before)
    flash(f"{ticket.reference}: SLA policy {'now ' + policy.name if policy else 'removed'}." if changed
          else "Nothing changed.", "success")
    if fragment_wanted():
        return parts(ticket, "tickets/_sla.html", trigger=CHANGED)
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))

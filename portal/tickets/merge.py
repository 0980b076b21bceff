"""Merging and splitting tickets: "Merge into…" and "Split…" on a ticket's page, each shown
first as a confirmation of what moves, "Unmerge" on a merged ticket, and merging the tickets
selected in the list into one. Every ticket is looked up within the signed-in MSP (404 otherwise)."""

from __future__ import annotations

from flask import abort, flash, g, render_template, request, url_for
from flask_login import current_user

from portal.extensions import db
from portal.responses import hx_redirect
from portal.services import ValidationError, ticket_merge
from portal.services import tickets as svc
from portal.tickets import views
from portal.tickets.blueprint import bp
from portal.tickets.page import ticket_or_404


def _target_or_404(reference: str):
    into = svc.get_ticket(g.msp_id, (reference or "")[:40]) if reference else None
    if into is None:
        abort(404)
    return into


def _merge_page(ticket, *, into=None, errors=None, status=200):
    query = request.args.get("q", "").strip()
    plan = None
    if into is not None and not errors:
        try:
            plan = ticket_merge.plan_merge(ticket, into)
        except ValidationError as exc:
            errors = exc.errors
    return render_template("tickets/merge.html", ticket=ticket, query=query, into=into, plan=plan,
                           errors=errors or {}, results=ticket_merge.merge_targets(ticket, query)), status


@bp.get("/<reference>/merge")
def merge_form(reference: str):
    ticket = ticket_or_404(reference)
    into = _target_or_404(request.args["into"]) if request.args.get("into") else None
    return _merge_page(ticket, into=into)


@bp.post("/<reference>/merge")
def merge(reference: str):
    ticket = ticket_or_404(reference)
    if not request.form.get("into", "").strip():
        return _merge_page(ticket, errors={"into": ["Choose the ticket to merge into."]}, status=422)
    into = _target_or_404(request.form["into"].strip())
    try:
        plan = ticket_merge.merge(ticket, into, current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _merge_page(ticket_or_404(reference), into=_target_or_404(request.form["into"].strip()),
                           errors=exc.errors, status=422)
    flash(f"{ticket.reference} is merged into {into.reference}: {plan.messages} messages moved.", "success")
    return hx_redirect(url_for("tickets.detail", reference=into.reference))


@bp.post("/<reference>/unmerge")
def unmerge(reference: str):
    ticket = ticket_or_404(reference)
    try:
        into = ticket_merge.unmerge(ticket, current_user)
    except ValidationError as exc:
        db.session.rollback()
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("tickets.detail", reference=reference))
    flash(f"{ticket.reference} is no longer merged into {into.reference}: its messages are back.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


def _split_page(ticket, chosen_ids, *, confirm: bool, errors=None, status=200):
    chosen = []
    if confirm and not errors:
        try:
            chosen = ticket_merge.plan_split(ticket, chosen_ids)
        except ValidationError as exc:
            errors = exc.errors
    return render_template("tickets/split.html", ticket=ticket, messages=svc.conversation(ticket),
                           picked={str(i) for i in chosen_ids}, chosen=chosen, errors=errors or {}), status


@bp.get("/<reference>/split")
def split_form(reference: str):
    ticket = ticket_or_404(reference)
    return _split_page(ticket, request.args.getlist("message"), confirm="message" in request.args)


@bp.post("/<reference>/split")
def split(reference: str):
    ticket = ticket_or_404(reference)
    chosen = request.form.getlist("message")
    try:
        child = ticket_merge.split(ticket, chosen, current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _split_page(ticket_or_404(reference), chosen, confirm=True, errors=exc.errors, status=422)
    flash(f"{child.reference} is split off {ticket.reference}. Merge it back to undo.", "success")
    return hx_redirect(url_for("tickets.detail", reference=child.reference))


@bp.post("/merge")
def bulk_merge():
    """From the list: without `confirm`, check the choice and show the confirmation; with it, merge."""
    selected, into = request.form.getlist("ticket"), request.form.get("into", "").strip()
    try:
        if request.form.get("confirm"):
            plans = ticket_merge.merge_many(g.msp_id, selected, into, current_user)
        else:
            ticket_merge.plan_many(g.msp_id, selected, into)
            return hx_redirect(url_for("tickets.merge_many", ticket=selected, into=into))
    except ValidationError as exc:
        db.session.rollback()
        g.bulk = {"errors": exc.errors, "values": svc.BulkChange(), "selected": set(selected), "into": into}
        return views.index(), 422
    target = plans[0].into.reference if plans else into
    flash(f"{len(plans)} tickets merged into {target}.", "success")
    return hx_redirect(url_for("tickets.detail", reference=target))


@bp.get("/merge")
def merge_many():
    """The confirmation of a merge of the tickets selected in the list."""
    selected, into = request.args.getlist("ticket"), request.args.get("into", "")
    try:
        plans = ticket_merge.plan_many(g.msp_id, selected, into)
    except ValidationError as exc:
        return render_template("tickets/merge_many.html", plans=[], errors=exc.errors, into=into), 422
    return render_template("tickets/merge_many.html", plans=plans, errors={}, into=plans[0].into.reference)

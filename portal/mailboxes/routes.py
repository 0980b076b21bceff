"""A mailbox's routes: add, change, remove, and reorder (drag and drop, or move up/down buttons)."""

from __future__ import annotations

from flask import abort, flash, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.display import place
from portal.extensions import db, htmx
from portal.mailboxes.blueprint import bp
from portal.mailboxes.forms import RouteForm
from portal.mailboxes.lookup import chosen_client, client_choices, client_or_404, mailbox_or_404
from portal.outbound.variants import variant_names
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, sla
from portal.services import routes as svc


def _route_or_404(mailbox, route_id: int):
    route = svc.get_route(mailbox, route_id)
    if route is None:
        abort(404)
    return route


def _form_page(form: RouteForm, mailbox, route, status: int):
    return render_page("mailboxes/route_form.html", "mailboxes/_route_form.html", form=form, mailbox=mailbox,
                       route=route), status


def _save(mailbox, route):
    form = RouteForm()
    form.client_id.choices = client_choices()
    if request.method == "GET":
        if route is not None:
            form.fill(route)
        else:
            # The first route of a mailbox has to be its fallback.
            form.fallback.data = not mailbox.routes
            form.client_id.data = mailbox.client_id
            form.enabled.data = form.acknowledge.data = True
            if request.args.get("bcc_sender") and mailbox.routes:
                # The routing check's fix for BCC'd mail: a wildcard route for that sender.
                form.recipients.data, form.senders.data = "*", request.args["bcc_sender"].strip()[:320]
                form.name.data = f"BCC from {form.senders.data}"
    form.offer_acknowledgements(variant_names(chosen_client(form, mailbox.client_id)))
    if form.validate_on_submit():
        try:
            saved = svc.save_route(mailbox, form.route_input(client_or_404(form.client_id.data)),
                                   actor=current_user, route=route)
            sla.choose(saved, form.chosen_policy(), current_user, mailbox.msp_id)
        except ValidationError as exc:
            db.session.rollback()
            mailbox = mailbox_or_404(mailbox.id)
            route = svc.get_route(mailbox, route.id) if route is not None else None
            form.service_errors = place(exc.errors, set(form._fields))
        else:
            flash(f"Route {saved.name} saved.", "success")
            return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox.id) + "#routes")
    return _form_page(form, mailbox, route, 422 if request.method == "POST" else 200)


@bp.route("/<int:mailbox_id>/routes/new", methods=["GET", "POST"])
@admin_required
def new_route(mailbox_id: int):
    return _save(mailbox_or_404(mailbox_id), None)


@bp.route("/<int:mailbox_id>/routes/<int:route_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_route(mailbox_id: int, route_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    return _save(mailbox, _route_or_404(mailbox, route_id))


@bp.post("/<int:mailbox_id>/routes/<int:route_id>/delete")
@admin_required
@asks_first("Remove this route")
def delete_route(mailbox_id: int, route_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    route = _route_or_404(mailbox, route_id)
    name = route.name
    try:
        svc.delete_route(mailbox, route, actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        flash("Not removed: " + " ".join(m for msgs in exc.errors.values() for m in msgs), "error")
    else:
        flash(f"Route {name} removed.", "success")
    # No "#routes": from the mailbox page itself the browser would only scroll, not reload.
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id))


@bp.post("/<int:mailbox_id>/routes/order")
@admin_required
def order_routes(mailbox_id: int):
    """Either a move button (move=<id>:up|down) or the whole order after a drag (order=<id>...)."""
    mailbox = mailbox_or_404(mailbox_id)
    note, moved, direction = "", None, None
    try:
        if request.form.get("move"):
            route_id, _, direction = request.form["move"].partition(":")
            if direction not in ("up", "down") or not route_id.isdigit():
                abort(400)
            moved = _route_or_404(mailbox, int(route_id))
            position = mailbox.routes.index(moved) + 1
            if svc.move_route(mailbox, moved, -1 if direction == "up" else 1, actor=current_user):
                note = f"Moved {moved.name} {direction} to place {mailbox.routes.index(moved) + 1}."
            else:
                note = f"{moved.name} stays at place {position}: it is the first or last of its kind."
        else:
            ids = [int(v) for v in request.form.getlist("order") if v.isdigit()]
            if not svc.reorder_routes(mailbox, ids, actor=current_user):
                note = ("Exact routes always come before wildcard routes, and the fallback route last: "
                        "the order was kept within those groups.")
            else:
                note = "New order saved."
    except ValidationError as exc:
        db.session.rollback()
        mailbox = mailbox_or_404(mailbox_id)
        note = " ".join(m for msgs in exc.errors.values() for m in msgs)
    if htmx and not htmx.boosted:
        return render_template("mailboxes/_routes.html", mailbox=mailbox, note=note,
                               moved=moved.id if moved else None, direction=direction)
    flash(note, "success")
    if moved:
        # No "#routes" here: Chromium clears the focus when it applies a fragment whose element
        # takes none, which may come after the script has focused the moved button (that focus
        # scrolls the routes into view anyway).
        return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id, moved=moved.id, direction=direction))
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id) + "#routes")


def _routes_answer(mailbox_id: int, note: str):
    """The route list with a note in its place (htmx), or the mailbox page with the note flashed."""
    if htmx and not htmx.boosted:
        return render_template("mailboxes/_routes.html", mailbox=mailbox_or_404(mailbox_id), note=note,
                               moved=None, direction=None)
    flash(note, "success")
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id) + "#routes")


@bp.post("/<int:mailbox_id>/routes/<int:route_id>/reset-count")
@admin_required
def reset_route_count(mailbox_id: int, route_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    route = _route_or_404(mailbox, route_id)
    svc.reset_test_count(mailbox, route, actor=current_user)
    return _routes_answer(mailbox_id, f"The test count of {route.name} starts again from 0.")


@bp.post("/<int:mailbox_id>/routes/<int:route_id>/make-live")
@admin_required
@asks_first("Make this route live")
def make_route_live(mailbox_id: int, route_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    route = _route_or_404(mailbox, route_id)
    try:
        svc.make_live(mailbox, route, actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _routes_answer(mailbox_id, "Not made live: " + " ".join(m for ms in exc.errors.values() for m in ms))
    return _routes_answer(mailbox_id, f"{route.name} is live: from now on it files the mail it matches.")

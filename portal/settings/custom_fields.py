"""Settings › Custom fields (admins): the MSP's custom ticket fields (add, change, move, remove)
and its ticket-type allow-list."""

from __future__ import annotations

from flask import abort, flash, g, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.extensions import db
from portal.mail.extract import FIELD_KINDS
from portal.responses import asks_first, hx_redirect
from portal.services import ValidationError
from portal.services import custom_fields as svc
from portal.settings.views import bp


def _field_or_404(field_id: int):
    found = svc.field_or_none(g.msp_id, field_id)
    if found is None:
        abort(404)
    return found


def _posted() -> svc.FieldInput:
    return svc.FieldInput(name=request.form.get("name", ""), kind=request.form.get("kind", ""),
                          choices=request.form.get("choices", "").splitlines())


def _page(status: int = 200, **context):
    fields = svc.list_fields(g.msp_id)
    context.setdefault("form", {"name": "", "kind": "text", "choices": ""})
    context.setdefault("errors", {})
    context.setdefault("types", "\n".join(svc.ticket_types(g.msp_id)))
    context.setdefault("type_errors", {})
    return render_template("settings/custom_fields.html", fields=fields, kinds=FIELD_KINDS,
                           counts={f.id: svc.tickets_with_value(f) for f in fields}, **context), status


@bp.route("/custom-fields", methods=["GET", "POST"])
@admin_required
def custom_fields():
    if request.method == "GET":
        return _page()
    try:
        saved = svc.save_field(current_user.msp, _posted(), actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _page(422, form=dict(request.form), errors=exc.errors)
    flash(f"Field {saved.name} added.", "success")
    return hx_redirect(url_for("settings.custom_fields"))


@bp.route("/custom-fields/<int:field_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_custom_field(field_id: int):
    custom = _field_or_404(field_id)
    form = {"name": custom.name, "kind": custom.kind, "choices": "\n".join(custom.choices or [])}
    errors: dict = {}
    status = 200
    if request.method == "POST":
        try:
            svc.save_field(current_user.msp, _posted(), actor=current_user, custom=custom)
        except ValidationError as exc:
            db.session.rollback()
            custom = _field_or_404(field_id)
            form, errors, status = dict(request.form), exc.errors, 422
        else:
            flash(f"Field {custom.name} saved.", "success")
            return hx_redirect(url_for("settings.custom_fields"))
    return render_template("settings/custom_field_form.html", custom=custom, form=form, errors=errors,
                           kinds=FIELD_KINDS, count=svc.tickets_with_value(custom)), status


@bp.post("/custom-fields/<int:field_id>/delete")
@admin_required
@asks_first("Remove this field")
def delete_custom_field(field_id: int):
    custom = _field_or_404(field_id)
    name = custom.name
    count = svc.delete_field(current_user.msp, custom, actor=current_user)
    flash(f"Field {name} removed" + (f", with its value on {count} ticket{'s' if count != 1 else ''}." if count
                                     else "."), "success")
    return hx_redirect(url_for("settings.custom_fields"))


@bp.post("/custom-fields/<int:field_id>/move")
@admin_required
def move_custom_field(field_id: int):
    custom = _field_or_404(field_id)
    direction = request.form.get("direction")
    if direction not in ("up", "down"):
        abort(400)
    if not svc.move_field(current_user.msp, custom, -1 if direction == "up" else 1, actor=current_user):
        flash(f"{custom.name} is already the {'first' if direction == 'up' else 'last'}.", "success")
    return hx_redirect(url_for("settings.custom_fields"))


@bp.post("/ticket-types")
@admin_required
def ticket_types():
    try:
        changed = svc.save_ticket_types(current_user.msp, request.form.get("ticket_types", "").splitlines(),
                                        actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _page(422, types=request.form.get("ticket_types", ""), type_errors=exc.errors)
    flash("Ticket types saved." if changed else "Nothing changed.", "success")
    return hx_redirect(url_for("settings.custom_fields"))

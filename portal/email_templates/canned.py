"""Canned responses per client, next to its email templates: the list in effect (own and
inherited), new, edit, remove. Admins only; technicians insert them while replying."""

from __future__ import annotations

from flask import abort, flash, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.clients.lookup import client_or_404
from portal.email_templates.blueprint import bp
from portal.extensions import db
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, canned


def _own_or_404(client, response_id: int):
    response = canned.get_own(client, response_id)
    if response is None:
        abort(404)
    return response


@bp.get("/canned")
@admin_required
def canned_index(client_id: int):
    client = client_or_404(client_id)
    return render_template("email_templates/canned_index.html", client=client, in_effect=canned.in_effect(client))


def _form_page(client, response, form: dict, errors: dict, status: int = 200):
    return render_page("email_templates/canned_edit.html", "email_templates/canned_form.html", client=client,
                       response=response, form=form, errors=errors), status


def _save(client, response):
    form = {"name": request.form.get("name", ""), "text": request.form.get("text", ""),
            "html": request.form.get("html", ""), "shared": request.form.get("shared") == "1"}
    try:
        saved = canned.save(client, name=form["name"], text=form["text"], html=form["html"], shared=form["shared"],
                            actor=current_user, response=response)
    except ValidationError as exc:
        db.session.rollback()
        return _form_page(client, response, form, exc.errors, 422)
    flash(f"The canned response {saved.name!r} of {client.name} is saved.", "success")
    return hx_redirect(url_for("email_templates.canned_index", client_id=client.id))


@bp.route("/canned/new", methods=["GET", "POST"])
@admin_required
def canned_new(client_id: int):
    client = client_or_404(client_id)
    if request.method == "POST":
        return _save(client, None)
    return _form_page(client, None, {"name": "", "text": "", "html": "", "shared": True}, {})


@bp.route("/canned/<int:response_id>", methods=["GET", "POST"])
@admin_required
def canned_edit(client_id: int, response_id: int):
    client = client_or_404(client_id)
    response = _own_or_404(client, response_id)
    if request.method == "POST":
        return _save(client, response)
    return _form_page(client, response, {"name": response.name, "text": "", "html": response.body_html,
                                         "shared": response.shared}, {})


@bp.post("/canned/<int:response_id>/delete")
@admin_required
@asks_first("Remove this canned response")
def canned_delete(client_id: int, response_id: int):
    client = client_or_404(client_id)
    response = _own_or_404(client, response_id)
    name = response.name
    canned.delete(response, current_user)
    flash(f"The canned response {name!r} of {client.name} is removed.", "success")
    return hx_redirect(url_for("email_templates.canned_index", client_id=client.id))

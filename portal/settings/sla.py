"""Settings › Service levels: the MSP's SLA policies (admins): list, create, change, delete."""

from __future__ import annotations

from flask import abort, flash, g, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.display import place
from portal.extensions import db
from portal.models.tickets import PRIORITIES
from portal.responses import asks_first, hx_redirect
from portal.services import ValidationError
from portal.services import sla as svc
from portal.settings.sla_forms import SlaPolicyForm
from portal.settings.views import bp
from portal.sla.business_time import WEEKDAYS
from portal.sla.clock import CLOCKS


def _policy_or_404(policy_id: int):
    policy = svc.get_policy(g.msp_id, policy_id)
    if policy is None:
        abort(404)
    return policy


@bp.get("/service-levels")
@admin_required
def sla_policies():
    rows = [(p, svc.usage(p)) for p in svc.policies(g.msp_id)]
    return render_template("settings/sla_policies.html", rows=rows)


def _form_page(policy):
    form = SlaPolicyForm()
    if request.method == "GET":
        form.fill(svc.form_of(policy))
    elif form.validate_on_submit():
        try:
            saved = svc.save_policy(g.msp_id, svc.read_form(form.policy_form()), current_user, policy)
        except ValidationError as exc:
            db.session.rollback()
            # A target's message sits beside its row (priority_clock), the rest beside their field.
            form.service_errors = place(exc.errors, {*form._fields, "targets",
                                                     *(f"{p}_{c}" for p in PRIORITIES for c in CLOCKS)})
        else:
            flash(f"SLA policy {saved.name} saved.", "success")
            return hx_redirect(url_for("settings.sla_policies"))
    return render_template("settings/sla_policy_form.html", form=form, policy=policy, weekdays=WEEKDAYS,
                           priorities=PRIORITIES, clocks=CLOCKS, clock_names=svc.CLOCK_NAMES,
                           usage=svc.usage(policy) if policy else None), 422 if request.method == "POST" else 200


@bp.route("/service-levels/new", methods=["GET", "POST"])
@admin_required
def sla_policy_new():
    return _form_page(None)


@bp.route("/service-levels/<int:policy_id>", methods=["GET", "POST"])
@admin_required
def sla_policy_edit(policy_id: int):
    return _form_page(_policy_or_404(policy_id))


@bp.post("/service-levels/<int:policy_id>/delete")
@admin_required
@asks_first("Delete this SLA policy")
def sla_policy_delete(policy_id: int):
    policy = _policy_or_404(policy_id)
    name = policy.name
    used = svc.delete_policy(policy, current_user)
    flash(f"SLA policy {name} deleted; it was used by {used.words()}.", "success")
    return hx_redirect(url_for("settings.sla_policies"))

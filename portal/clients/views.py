from __future__ import annotations

from flask import Blueprint, current_app, flash, g, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.clients.forms import ClientForm
from portal.clients.lookup import client_or_404
from portal.extensions import db
from portal.outbound import settings as outbound_settings
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, audit
from portal.services import clients as svc
from portal.services import sla
from portal.services import tenant_consent as consent_svc

bp = Blueprint("clients", __name__, url_prefix="/clients")
HISTORY_PAGE = 20


def _parent_choices(exclude=None) -> list[tuple[int, str]]:
    skip = set()
    if exclude is not None:
        skip = {exclude.id} | svc.descendant_ids(exclude)
    return [
        (n.client.id, "\u2003" * n.depth + n.client.name)
        for n in svc.client_tree(g.msp_id)
        if n.client.id not in skip
    ]


def _offer_policies(form: ClientForm, client=None, parent=None) -> None:
    """The MSP's policies, and "inherit" saying what would be inherited (from the parent)."""
    if client is not None:
        inherited, source = sla.inherited_by(client)
    else:
        parent = parent or client_or_404(g.msp_id)
        inherited, source = (sla.get_policy(g.msp_id, parent.sla_policy_id), parent) if parent.sla_policy_id \
            else sla.inherited_by(parent)
    label = f"Inherit: {inherited.name} (from {source.name})" if inherited else "Inherit: none"
    form.sla_policy_id.choices = [("", label)] + [(str(p.id), p.name) for p in sla.policies(g.msp_id)]
    if client is not None and request.method == "GET":
        form.sla_policy_id.data = str(client.sla_policy_id or "")


def _choose_policy(form: ClientForm, client) -> bool:
    chosen = form.sla_policy_id.data or ""
    return sla.choose(client, sla.get_policy(g.msp_id, int(chosen)) if chosen else None, current_user, g.msp_id)


def _input_from(form: ClientForm, is_msp: bool) -> svc.ClientInput:
    return svc.ClientInput(
        name=form.name.data or "",
        code=form.code.data or "",
        waterline=form.waterline.data or "",
        timezone=form.timezone.data or "",
        language=form.language.data or "",
        allow=form.allow.data or "",
        reference_prefix=(form.reference_prefix.data or "") if is_msp else None,
    )


@bp.get("")
def tree():
    query = request.args.get("q", "").strip()
    nodes = svc.client_tree(g.msp_id, query)
    return render_page("clients/tree.html", "clients/_tree.html", nodes=nodes, query=query)


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    form = ClientForm()
    form.parent_id.choices = _parent_choices()
    if request.method == "GET":
        form.parent_id.data = request.args.get("parent", type=int) or g.msp_id
    _offer_policies(form, parent=svc.get_client(g.msp_id, form.parent_id.data or g.msp_id))
    if form.validate_on_submit():
        parent = client_or_404(form.parent_id.data)
        try:
            client = svc.create_client(parent, _input_from(form, False), current_user)
            _choose_policy(form, client)
        except ValidationError as exc:
            form.service_errors = exc.errors
        else:
            flash(f"Client {client.name} created.", "success")
            return hx_redirect(url_for("clients.detail", client_id=client.id))
    status = 422 if request.method == "POST" else 200
    return render_page("clients/form.html", "clients/_form.html", form=form, client=None), status


@bp.get("/<int:client_id>")
def detail(client_id: int):
    return _detail_page(client_or_404(client_id))


def _detail_page(client, status: int = 200, **extra):
    entries, total = audit.history(g.msp_id, "client", client.id, per_page=HISTORY_PAGE)
    return render_template(
        "clients/detail.html",
        client=client,
        settings=svc.effective_settings(client),
        disabled_by=svc.disabled_by(client),
        ancestors=list(reversed(svc.ancestors(client))),
        history=entries,
        history_total=total,
        history_page=1,
        history_pages=max(1, -(-total // HISTORY_PAGE)),
        microsoft=consent_svc.overview(client),
        notifications=outbound_settings.customer_notifications_in_effect(client),
        customer_notifications=outbound_settings.CUSTOMER_NOTIFICATIONS,
        own_policy=sla.get_policy(g.msp_id, client.sla_policy_id), inherited_policy=sla.inherited_by(client),
        **extra,
    ), status


@bp.post("/<int:client_id>/consent-link")
@admin_required
def consent_link(client_id: int):
    """A fresh Microsoft 365 admin-consent link for this customer's global admin, shown once."""
    client = client_or_404(client_id)
    try:
        link = consent_svc.create_consent_link(client, actor=current_user,
                                               portal_url=current_app.config["TIDEMARK_PORTAL_URL"])
    except ValidationError as exc:
        db.session.rollback()
        return _detail_page(client, 422, consent_errors=[m for ms in exc.errors.values() for m in ms])
    return _detail_page(client, consent_link=link)


@bp.get("/<int:client_id>/history")
def history(client_id: int):
    client = client_or_404(client_id)
    page = max(1, request.args.get("page", 1, type=int))
    entries, total = audit.history(g.msp_id, "client", client.id, page=page, per_page=HISTORY_PAGE)
    return render_page(
        "clients/history.html", "clients/_history.html", client=client, history=entries,
        history_total=total, history_page=page, history_pages=max(1, -(-total // HISTORY_PAGE)),
    )


@bp.route("/<int:client_id>/edit", methods=["GET", "POST"])
@admin_required
def edit(client_id: int):
    client = client_or_404(client_id)
    form = ClientForm(obj=client if request.method == "GET" else None)
    form.parent_id.choices = [] if client.is_msp else _parent_choices(exclude=client)
    if client.is_msp:
        # An MSP root has no parent field; keep WTForms from rejecting the empty choice.
        form.parent_id.validate_choice = False
        form.parent_id.data = 0
    if request.method == "GET":
        form.allow.data = "\n".join(e.value for e in client.allow_entries)
        form.parent_id.data = client.parent_id or 0
    _offer_policies(form, client)
    if form.validate_on_submit():
        try:
            if not client.is_msp and form.parent_id.data != client.parent_id:
                svc.move_client(client, client_or_404(form.parent_id.data), current_user)
            changes = svc.update_client(client, _input_from(form, client.is_msp), current_user)
            changes = _choose_policy(form, client) or changes
        except ValidationError as exc:
            form.service_errors = exc.errors
            # Keep the database as it was: nothing of a half-valid form is applied.
            db.session.rollback()
            client = client_or_404(client_id)
        else:
            flash(f"Saved {client.name}." if changes else "Nothing changed.", "success")
            return hx_redirect(url_for("clients.detail", client_id=client.id))
    status = 422 if request.method == "POST" else 200
    return render_page("clients/form.html", "clients/_form.html", form=form, client=client), status


@bp.post("/<int:client_id>/notifications")
@admin_required
def notifications(client_id: int):
    """The client's own choice of customer notifications, or back to inheriting it."""
    client = client_or_404(client_id)
    chosen = None if request.form.get("inherit") == "1" else request.form.getlist("customer_notifications")
    try:
        changes = outbound_settings.save_client_notifications(client, chosen, actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        return _detail_page(client_or_404(client_id), 422, notification_errors=exc.errors)
    flash("Customer notifications saved." if changes else "Nothing changed.", "success")
    return hx_redirect(url_for("clients.detail", client_id=client.id))


@bp.post("/<int:client_id>/disable")
@admin_required
@asks_first("Disable this client")
def disable(client_id: int):
    return _set_disabled(client_id, True)


@bp.post("/<int:client_id>/enable")
@admin_required
def enable(client_id: int):
    return _set_disabled(client_id, False)


def _set_disabled(client_id: int, disabled: bool):
    client = client_or_404(client_id)
    try:
        svc.set_client_disabled(client, disabled, current_user)
    except ValidationError as exc:
        db.session.rollback()  # the answer is not an error status: nothing of the refused change is kept
        flash(" ".join(m for msgs in exc.errors.values() for m in msgs), "error")
    else:
        flash(f"{client.name} is {'disabled' if disabled else 'enabled'}.", "success")
    return hx_redirect(url_for("clients.detail", client_id=client.id))

"""Mailboxes: health at a glance, the settings form, status, removal and "test connection".
Routes and the outgoing server have their own modules on the same blueprint."""

from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.display import viewer_timezone
from portal.extensions import db, htmx
from portal.inbound import fetch_now
from portal.mailboxes.blueprint import bp
from portal.mailboxes.forms import PRESETS, MailboxForm
from portal.mailboxes.lookup import chosen_client, client_choices, client_or_404, keys, mailbox_or_404
from portal.models.base import utcnow
from portal.models.mailboxes import DEFAULT_PORTS
from portal.outbound.servers import own_server
from portal.outbound.variants import variant_names
from portal.responses import asks_first, hx_redirect, render_page, same_site_path
from portal.services import ValidationError, audit, sla
from portal.services import dashboard as board
from portal.services import grant_expiry
from portal.services import mailbox_checks
from portal.services import mailbox_connect as connect_svc
from portal.services import oauth_states
from portal.services import mailboxes as svc
from portal.inbound.health import stalled_ids
from portal.inbound.push import push_states

HISTORY_PAGE = 20


def _form_page(form: MailboxForm, mailbox, status: int):
    return render_page("mailboxes/form.html", "mailboxes/_form.html", form=form, mailbox=mailbox,
                       default_ports=DEFAULT_PORTS, presets=PRESETS,
                       redirect_uri=oauth_states.redirect_uri(current_app.config["TIDEMARK_PORTAL_URL"])), status


@bp.get("")
def index():
    rows = board.mailbox_health(g.msp_id)
    return render_template("mailboxes/index.html", rows=rows, figures=board.mailbox_figures(g.msp_id, viewer_timezone()),
                           fetch_states=fetch_now.asked_states([r.mailbox.id for r in rows]),
                           pushes=push_states([r.mailbox for r in rows], utcnow()))


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    form = MailboxForm()
    form.client_id.choices = client_choices()
    if request.method == "GET":
        form.defaults()
        form.client_id.data = g.msp_id
    form.offer_acknowledgements(variant_names(chosen_client(form, g.msp_id)))
    if form.validate_on_submit():
        msp = client_or_404(g.msp_id)
        try:
            mailbox, _ = svc.save_mailbox(msp, client_or_404(form.client_id.data), form.values(), keys=keys(),
                                          actor=current_user, require_test=True)
            sla.choose(mailbox, form.chosen_policy(), current_user, g.msp_id)
        except ValidationError as exc:
            db.session.rollback()
            form.place_errors(exc.errors)
        else:
            flash(f"Mailbox {mailbox.address} created. Add its routes, then activate it.", "success")
            return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox.id))
    return _form_page(form, None, 422 if request.method == "POST" else 200)


@bp.get("/<int:mailbox_id>")
def detail(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    entries, total = audit.history(g.msp_id, "mailbox", mailbox.id, per_page=HISTORY_PAGE)
    if current_user.is_admin and (origin := connect_svc.sign_in_origin(mailbox)):
        g.form_targets = (origin,)  # Connect without script: the 303 to the sign-in is a form's redirect
    return render_template(
        "mailboxes/detail.html", mailbox=mailbox, fetch_states=fetch_now.asked_states([mailbox.id]), server=own_server(mailbox),
        problems=svc.activation_problems(mailbox) + [p for p in [svc.test_problem(mailbox, set(), was_active=False)] if p],
        stalled=bool(stalled_ids([mailbox], utcnow())), push=push_states([mailbox], utcnow())[mailbox.id],
        sign_in=grant_expiry.sign_in(mailbox, utcnow()),
        ticket_time=board.time_to_ticket_today(g.msp_id, viewer_timezone(), mailbox_id=mailbox.id).get(mailbox.id),
        duration=board.duration_in_words,
        redirect_uri=oauth_states.redirect_uri(current_app.config["TIDEMARK_PORTAL_URL"]),
        history=entries, history_total=total, history_page=1, history_pages=max(1, -(-total // HISTORY_PAGE)),
        # A move made without htmx (a click before the script had taken the list) comes back here:
        # the moved route's button keeps the keyboard's place, as after the htmx swap.
        **_moved_route(),
    )


def _moved_route() -> dict:
    """The move a plain form post came back from (?moved=<route id>&direction=up|down), else none."""
    direction = request.args.get("direction")
    if direction not in ("up", "down"):
        return {"moved": None, "direction": None}
    return {"moved": request.args.get("moved", type=int), "direction": direction}


@bp.get("/<int:mailbox_id>/history")
def history(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    page = max(1, request.args.get("page", 1, type=int))
    entries, total = audit.history(g.msp_id, "mailbox", mailbox.id, page=page, per_page=HISTORY_PAGE)
    return render_page("mailboxes/history.html", "mailboxes/_history.html", mailbox=mailbox, history=entries,
                       history_total=total, history_page=page, history_pages=max(1, -(-total // HISTORY_PAGE)))


@bp.route("/<int:mailbox_id>/edit", methods=["GET", "POST"])
@admin_required
def edit(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    form = MailboxForm()
    form.client_id.choices = client_choices()
    if request.method == "GET":
        form.fill(mailbox)
    form.offer_acknowledgements(variant_names(chosen_client(form, mailbox.client_id)))
    form.offer_folders(mailbox_checks.known_folders(mailbox.id), split=request.method == "GET")
    if form.validate_on_submit():
        values = form.values()
        try:
            _mailbox, changes = svc.save_mailbox(client_or_404(g.msp_id), client_or_404(form.client_id.data), values,
                                                 keys=keys(), actor=current_user, mailbox=mailbox,
                                                 require_test=True)
            changes = sla.choose(mailbox, form.chosen_policy(), current_user, g.msp_id) or changes
        except ValidationError as exc:
            # Nothing of a half-valid form is applied.
            db.session.rollback()
            mailbox = mailbox_or_404(mailbox_id)
            form.place_errors(exc.errors)
        else:
            flash(f"Saved {mailbox.address}." if changes else "Nothing changed.", "success")
            return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox.id))
    return _form_page(form, mailbox, 422 if request.method == "POST" else 200)


@bp.post("/check")
@bp.post("/<int:mailbox_id>/check")
@admin_required
def check(mailbox_id: int | None = None):
    """"Test connection" from the form: the values as typed, before saving; nothing is kept."""
    mailbox = mailbox_or_404(mailbox_id) if mailbox_id else None
    form = MailboxForm()
    form.client_id.choices = client_choices()
    values = form.values()
    try:
        result = svc.probe_settings(values, keys(), mailbox=mailbox, ca_file=current_app.config["TIDEMARK_CA_FILE"],
                                    actor=current_user)
    except ValidationError as exc:
        db.session.rollback()  # the answer is not an error status: nothing of the refused test is kept
        message = " ".join(m for msgs in exc.errors.values() for m in msgs)
        return render_template("mailboxes/_check_result.html", ok=False, message=message)
    if result.ok and mailbox is not None and values.get("protocol") != "pop3":
        mailbox_checks.remember_folders(mailbox.id, result.folders)
    # A test with the saved password has a history entry: the answer commits it.
    return render_template("mailboxes/_check_result.html", ok=result.ok, message=result.message,
                           folders=result.folders)


@bp.post("/<int:mailbox_id>/test")
@admin_required
def test_connection(mailbox_id: int):
    """Try the server now; the answer shows in place and is kept on the mailbox."""
    mailbox = mailbox_or_404(mailbox_id)
    result = mailbox_checks.test_mailbox(mailbox, keys(), ca_file=current_app.config["TIDEMARK_CA_FILE"],
                                         actor=current_user)
    return render_template("mailboxes/_test_result.html", box=mailbox, result=result)


@bp.post("/<int:mailbox_id>/activate")
@admin_required
def activate(mailbox_id: int):
    return _set_status(mailbox_id, "active")


@bp.post("/<int:mailbox_id>/disable")
@admin_required
@asks_first("Disable this mailbox")
def disable(mailbox_id: int):
    return _set_status(mailbox_id, "disabled")


def _set_status(mailbox_id: int, status: str):
    mailbox = mailbox_or_404(mailbox_id)
    try:
        svc.set_status(mailbox, status, keys=keys(), actor=current_user)
    except ValidationError as exc:
        db.session.rollback()
        flash("Not activated: " + " ".join(m for msgs in exc.errors.values() for m in msgs), "error")
    else:
        flash(f"{mailbox.address} is {'active: it is fetched from now on' if status == 'active' else 'disabled'}.",
              "success")
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id))


@bp.post("/<int:mailbox_id>/delete")
@admin_required
@asks_first("Delete this mailbox")
def delete(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    address = mailbox.address
    tickets = svc.delete_mailbox(mailbox, actor=current_user)
    kept = (" Its ticket stays." if tickets == 1 else f" Its {tickets} tickets stay.") if tickets else ""
    flash(f"Mailbox {address} deleted.{kept}", "success")
    return hx_redirect(url_for("mailboxes.index"))



@bp.post("/<int:mailbox_id>/fetch")
def fetch(mailbox_id: int):
    """"Fetch now": queued for a worker (admins and technicians: it does what the schedule does);
    the answer waits for its outcome. Without script, back to the page it came from."""
    mailbox = mailbox_or_404(mailbox_id)
    refused = None
    try:
        fetch_now.ask_to_fetch(mailbox, viewer_timezone())  # queued; the request's end hands it over
    except fetch_now.FetchRefused as exc:
        refused = str(exc)
    if htmx:
        return render_template("mailboxes/_fetch_now.html", box=mailbox, state={"done": False}, refused=refused)
    if refused:
        flash(f"Not fetched: {refused}.", "error")
    back = same_site_path(request.form.get("next")) or url_for("mailboxes.detail", mailbox_id=mailbox.id)
    return redirect(back, 303)


@bp.get("/<int:mailbox_id>/fetch")
def fetch_state(mailbox_id: int):
    """The outcome of the last "Fetch now", asked for again every 2 seconds while it is waited for
    (up to fetch_now.WAIT_SECONDS)."""
    mailbox = mailbox_or_404(mailbox_id)
    return render_template("mailboxes/_fetch_now.html", box=mailbox, state=fetch_now.asked_state(mailbox.id))

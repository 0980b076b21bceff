"""Unprocessed mail and the routing check. Admins and technicians both work this queue;
teaching an allow-list changes a client's configuration, so only admins do that."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, g, render_template, request, session, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.extensions import db, htmx
from portal.inbound import unprocessed as svc
from portal.inbound.replay import CheckInput, Pipeline, check_routing
from portal.models import Mailbox
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, audit
from portal.services.clients import get_client
from portal.inbound import unprocessed_fixes as fixes
from portal.unprocessed.forms import AppendForm, AssignForm, BccRouteForm, CheckForm, NewClientForm, TeachForm

bp = Blueprint("unprocessed", __name__, url_prefix="/unprocessed")
UNDO_KEY = "unprocessed_undo"
LISTS = {"waiting": False, "discarded": True}


@bp.app_context_processor
def nav_badge():
    def unprocessed_count() -> int:
        if not current_user.is_authenticated:
            return 0
        return svc.count_waiting(current_user.msp_id)

    return {"unprocessed_count": unprocessed_count}


def _pipeline() -> Pipeline:
    return Pipeline(secret=current_app.config["SECRET_KEY"].encode(), host=current_app.config["TIDEMARK_MAIL_HOST"])


def _mail_or_404(message_id: int):
    message = svc.get_mail(g.msp_id, message_id)
    if message is None:
        abort(404)
    return message


def _partial() -> bool:
    return bool(htmx) and not htmx.boosted


# --- the list ------------------------------------------------------------------------------------


def _list_context(show: str) -> dict:
    discarded = LISTS.get(show, False)
    page = max(1, request.args.get("page", 1, type=int))
    per_page = current_app.config["TIDEMARK_PAGE_SIZE"]
    rows, total = svc.list_mail(g.msp_id, discarded=discarded, page=page, per_page=per_page)
    undo = None
    undo_id = session.pop(UNDO_KEY, None)
    if undo_id is not None:
        found = svc.get_mail(g.msp_id, undo_id)
        undo = svc.detail(g.msp_id, found) if found is not None and found.outcome == svc.DISCARDED else None
    return dict(rows=rows, total=total, page=page, pages=max(1, -(-total // per_page)),
                show="discarded" if discarded else "waiting", undo=undo, undo_days=svc.UNDO_DAYS,
                waiting_count=svc.count_waiting(g.msp_id), discarded_count=svc.count_discarded(g.msp_id),
                partial=_partial())


@bp.get("")
def index():
    context = _list_context(request.args.get("show", ""))
    return render_page("unprocessed/index.html", "unprocessed/_list.html", **context)


# --- one email -----------------------------------------------------------------------------------


def _forms(message, assign=None, append=None, teach=None, bcc=None, new_client=None) -> dict:
    clients = [(c.id, c.name) for c in svc.choices(g.msp_id)]
    assign = assign or AssignForm(prefix="assign")
    append = append or AppendForm(prefix="append")
    teach = teach or TeachForm(prefix="teach")
    bcc = bcc or BccRouteForm(prefix="bcc")
    new_client = new_client or NewClientForm(prefix="client", data={"name": fixes.client_name_for(message)})
    assign.client_id.choices = teach.client_id.choices = bcc.client_id.choices = [(0, "Choose a client…"), *clients]
    scopes, counts = [], {}
    for scope in ("domain", "address"):
        try:
            value = svc.sender_entry(message, scope)
        except ValidationError:
            continue
        counts[scope] = len(svc.same_sender(g.msp_id, value))
        label = (f"everyone at {value}" if scope == "domain" else f"only {value}")
        scopes.append((scope, label))
    teach.scope.choices = scopes
    bcc.scope.choices = [(s, f"anyone at {v}" if s == "domain" else f"{v} only")
                         for s, v in ((s, svc.sender_entry(message, s)) for s, _ in scopes)]
    for form in (teach, bcc):
        if scopes and form.scope.data not in dict(scopes):
            form.scope.data = scopes[0][0]
    cause = fixes.bcc_cause(message)
    if cause is not None and cause.claimed_by and not bcc.client_id.data:
        bcc.client_id.data = cause.claimed_by  # the client the allow-list already names
    return dict(assign_form=assign, append_form=append, teach_form=teach, teach_counts=counts, bcc_cause=cause,
                bcc_form=bcc, client_form=new_client)


def _detail_context(message, **forms) -> dict:
    history, _total = audit.history(g.msp_id, svc.RECORD, message.id, per_page=10)
    return dict(row=svc.detail(g.msp_id, message), message=message, history=history,
                undo_until=svc.undo_until(message), **_forms(message, **forms))


@bp.get("/<int:message_id>")
def detail(message_id: int):
    message = _mail_or_404(message_id)
    return render_template("unprocessed/detail.html", **_detail_context(message))


@bp.get("/<int:message_id>/source")
def source(message_id: int):
    """The email exactly as received, as plain text (never rendered)."""
    message = _mail_or_404(message_id)
    raw = message.raw_message.raw if message.raw_message else None
    if raw is None:
        abort(404)
    return Response(raw, mimetype="text/plain", headers={"Content-Disposition": "inline"})


def _invalid(message_id: int, exc: ValidationError | None = None, **forms):
    """Show the actions again with what is wrong next to the field (422)."""
    db.session.rollback()
    message = _mail_or_404(message_id)
    if exc is not None:
        next(iter(forms.values())).place_errors(exc.errors)
    context = _detail_context(message, **forms)
    if _partial():
        return render_template("unprocessed/_actions.html", **context), 422
    return render_template("unprocessed/detail.html", **context), 422


def _client_from(form):
    return get_client(g.msp_id, form.client_id.data) if form.client_id.data else None


@bp.post("/<int:message_id>/assign")
def assign(message_id: int):
    message = _mail_or_404(message_id)
    form = AssignForm(prefix="assign")
    form.client_id.choices = [(0, ""), *[(c.id, c.name) for c in svc.choices(g.msp_id)]]
    if not form.validate_on_submit() or not form.client_id.data:
        if not form.client_id.errors:
            form.client_id.errors = ["Choose one of your clients."]
        return _invalid(message_id, assign=form)
    try:
        outcome = svc.assign(message, _client_from(form), current_user, _pipeline())
    except ValidationError as exc:
        return _invalid(message_id, exc, assign=form)
    ticket = outcome.ticket
    flash(f"Created {ticket.reference} for {ticket.client.name} from this email.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.post("/<int:message_id>/append")
def append(message_id: int):
    message = _mail_or_404(message_id)
    form = AppendForm(prefix="append")
    if not form.validate_on_submit():
        return _invalid(message_id, append=form)
    wanted = form.reference.data.strip().upper()
    try:
        outcome = svc.append(message, wanted, current_user, _pipeline())
    except ValidationError as exc:
        return _invalid(message_id, exc, append=form)
    ticket = outcome.ticket
    if ticket.reference == wanted:
        flash(f"Appended to {ticket.reference}.", "success")
    else:  # a closed ticket, or one of another mailbox: the status rules made a new, linked one
        flash(f"{wanted} could not take it ({outcome.result.trace[-1]}); it is on {ticket.reference}.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.post("/<int:message_id>/teach")
@admin_required
@asks_first("Teach the allow-list")
def teach(message_id: int):
    message = _mail_or_404(message_id)
    form = TeachForm(prefix="teach")
    form.client_id.choices = [(0, ""), *[(c.id, c.name) for c in svc.choices(g.msp_id)]]
    form.scope.choices = [("domain", "domain"), ("address", "address")]
    if not form.validate_on_submit() or not form.client_id.data:
        if not form.client_id.errors and not form.client_id.data:
            form.client_id.errors = ["Choose one of your clients."]
        return _invalid(message_id, teach=form)
    try:
        lesson = svc.teach(message, _client_from(form), form.scope.data, current_user, _pipeline())
    except ValidationError as exc:
        return _invalid(message_id, exc, teach=form)
    placed = lesson.placed
    head = (f"Added {lesson.value} to the allow-list of {lesson.client.name}." if lesson.added
            else f"{lesson.value} was already on the allow-list of {lesson.client.name}.")
    if placed:
        refs = ", ".join(o.ticket.reference for o in placed)
        flash(f"{head} Placed {len(placed)} of {len(lesson.outcomes)} waiting email"
              f"{'' if len(lesson.outcomes) == 1 else 's'} from this sender: {refs}.", "success")
    else:
        flash(f"{head} None of the {len(lesson.outcomes)} waiting email{'' if len(lesson.outcomes) == 1 else 's'} "
              "from this sender could be placed; open one to see why.", "warning")
    return hx_redirect(url_for("unprocessed.index"))


def _decided_again(message, outcome, head: str):
    """Where to go once a fix has decided the email again, with what happened."""
    if outcome.error:
        flash(f"{head} Deciding the email again failed: {outcome.error}", "error")
    elif outcome.placed:
        flash(f"{head} The email is now on {outcome.ticket.reference}.", "success")
        return hx_redirect(url_for("tickets.detail", reference=outcome.ticket.reference))
    else:
        flash(f"{head} The email is still unprocessed: {svc.why(message)}", "warning")
    return hx_redirect(url_for("unprocessed.detail", message_id=message.id))


@bp.post("/<int:message_id>/bcc-route")
@admin_required
@asks_first("Add the wildcard route")
def bcc_route(message_id: int):
    """The fix for BCC'd mail: a wildcard route for the sender, then the email decided again."""
    message = _mail_or_404(message_id)
    form = BccRouteForm(prefix="bcc")
    form.client_id.choices = [(0, ""), *[(c.id, c.name) for c in svc.choices(g.msp_id)]]
    form.scope.choices = [("domain", "domain"), ("address", "address")]
    if not form.validate_on_submit() or not form.client_id.data:
        if not form.client_id.errors and not form.client_id.data:
            form.client_id.errors = ["Choose one of your clients."]
        return _invalid(message_id, bcc=form)
    try:
        route, added, outcome = fixes.fix_bcc(message, _client_from(form), form.scope.data, current_user,
                                              _pipeline())
    except ValidationError as exc:
        return _invalid(message_id, exc, bcc=form)
    head = (f"Added the wildcard route {route.name!r} to {route.mailbox.address}." if added
            else f"The wildcard route {route.name!r} was there already.")
    return _decided_again(message, outcome, head)


@bp.post("/<int:message_id>/new-client")
@admin_required
def new_client(message_id: int):
    """A client for a sender no client knows, with its domain on the allow-list; then decided again."""
    message = _mail_or_404(message_id)
    form = NewClientForm(prefix="client")
    if not form.validate_on_submit():
        return _invalid(message_id, new_client=form)
    try:
        client, outcome = fixes.create_client_for(message, form.name.data, current_user, _pipeline())
    except ValidationError as exc:
        return _invalid(message_id, exc, new_client=form)
    return _decided_again(message, outcome, f"Created the client {client.name}, allowing "
                                            f"{', '.join(e.value for e in client.allow_entries)}.")


@bp.post("/<int:message_id>/rerun")
def rerun(message_id: int):
    message = _mail_or_404(message_id)
    try:
        outcome = svc.rerun(message, current_user, _pipeline())
    except ValidationError as exc:
        db.session.rollback()  # the answer is not an error status: nothing of the refused change is kept
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("unprocessed.detail", message_id=message.id))
    if outcome.error:
        flash(f"Deciding again failed: {outcome.error}", "error")
    elif outcome.placed:
        flash(f"Decided again: {outcome.result.outcome}, on {outcome.ticket.reference}.", "success")
        return hx_redirect(url_for("tickets.detail", reference=outcome.ticket.reference))
    elif outcome.result.outcome != svc.UNPROCESSED:
        flash(f"Decided again: {outcome.result.outcome}. {outcome.result.trace[-1]}", "success")
        return hx_redirect(url_for("unprocessed.index"))
    else:
        flash(f"Still unprocessed: {svc.why(message)}", "warning")
    return hx_redirect(url_for("unprocessed.detail", message_id=message.id))


def _back_to_list(show: str):
    """From a row of the list: the list again, in place; otherwise to the list page."""
    if _partial() and show in LISTS:
        return render_template("unprocessed/_list.html", **_list_context(show))
    return hx_redirect(url_for("unprocessed.index", show="discarded") if show == "discarded"
                       else url_for("unprocessed.index"))


@bp.post("/<int:message_id>/discard")
def discard(message_id: int):
    message = _mail_or_404(message_id)
    try:
        svc.discard(message, current_user)
    except ValidationError as exc:
        db.session.rollback()  # the answer is not an error status: nothing of the refused change is kept
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("unprocessed.index"))
    session[UNDO_KEY] = message.id  # the list shows it with an Undo button, once
    return _back_to_list(request.form.get("show", ""))


@bp.post("/<int:message_id>/restore")
def restore(message_id: int):
    message = _mail_or_404(message_id)
    try:
        svc.restore(message, current_user)
    except ValidationError as exc:
        db.session.rollback()  # the answer is not an error status: nothing of the refused change is kept
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("unprocessed.index", show="discarded"))
    show = request.form.get("show", "")
    if not (_partial() and show in LISTS):
        flash("Restored: the email waits among the unprocessed mail again.", "success")
    if show == "detail":
        return hx_redirect(url_for("unprocessed.detail", message_id=message.id))
    return _back_to_list(show)


# --- the routing check ---------------------------------------------------------------------------


@bp.route("/check", methods=["GET", "POST"])
def check():
    form = CheckForm()
    mailboxes = db.session.scalars(db.select(Mailbox).where(Mailbox.msp_id == g.msp_id).order_by(Mailbox.address)).all()
    form.mailbox_id.choices = [(m.id, m.address if m.status == "active" else f"{m.address} ({m.status})")
                               for m in mailboxes]
    result, status = None, 200
    if request.method == "POST":
        if form.validate_on_submit():
            raw = form.raw.data or ""
            if form.upload.data:
                # Bytes as received: surrogateescape keeps 8-bit mail intact through the text field's type.
                raw = form.upload.data.read(5_000_001).decode("utf-8", "surrogateescape")
                if len(raw) > 5_000_000:
                    form.service_errors = {"upload": ["The file is over 5 MB: check a smaller email."]}
                    return render_page("unprocessed/check.html", "unprocessed/_check.html", form=form, result=None,
                                       has_mailboxes=bool(mailboxes)), 422
            data = CheckInput(mailbox_id=form.mailbox_id.data, sender=form.sender.data or "",
                              to=form.to.data or "", cc=form.cc.data or "", subject=form.subject.data or "",
                              body=form.body.data or "", raw=raw)
            try:
                result = check_routing(g.msp_id, data, _pipeline())
            except ValidationError as exc:
                form.service_errors = exc.errors
                status = 422
        else:
            status = 422
    return render_page("unprocessed/check.html", "unprocessed/_check.html", form=form, result=result,
                       has_mailboxes=bool(mailboxes)), status

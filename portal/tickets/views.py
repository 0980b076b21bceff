from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, g, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message
from portal.responses import hx_redirect, render_page
from portal.services import ValidationError, commit
from portal.services import tickets as svc

bp = Blueprint("tickets", __name__, url_prefix="/tickets")


def _ticket_or_404(reference: str):
    ticket = svc.get_ticket(g.msp_id, reference)
    if ticket is None:
        abort(404)
    return ticket


def _filters() -> svc.TicketFilters:
    args = request.args
    return svc.TicketFilters(
        q=args.get("q", "").strip(), status=args.get("status", ""), client_id=args.get("client", type=int),
        priority=args.get("priority", ""), mailbox_id=args.get("mailbox", type=int),
        assignee_id=args.get("assignee", type=int), new_information=args.get("new") == "1")


@bp.get("")
def index():
    filters = _filters()
    page = max(1, request.args.get("page", 1, type=int))
    per_page = current_app.config["TIDEMARK_PAGE_SIZE"]
    tickets, total = svc.list_tickets(g.msp_id, filters, page=page, per_page=per_page)
    pages = max(1, -(-total // per_page))
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_page("tickets/index.html", "tickets/_list.html", tickets=tickets, total=total, page=page,
                       pages=pages, filters=filters, args=args, choices=svc.filter_choices(g.msp_id))


def _detail_context(ticket, reply_form=None, errors=None, note_errors=None):
    to, cc = svc.reply_defaults(ticket)
    return dict(ticket=ticket, messages=svc.conversation(ticket), links=svc.linked_tickets(ticket),
                reply=reply_form or {"to": ", ".join(to), "cc": ", ".join(cc), "text": "", "set_status": ""},
                errors=errors or {}, note_errors=note_errors or {}, statuses=svc.WORK_STATUSES)


@bp.get("/<reference>")
def detail(reference: str):
    ticket = _ticket_or_404(reference)
    svc.mark_read(ticket)
    commit()
    return render_template("tickets/detail.html", **_detail_context(ticket))


def _write(reference: str, action, done: str, *, reply_form: dict | None = None):
    """Run a write on the ticket; on bad input show the page again with the messages (422)."""
    ticket = _ticket_or_404(reference)
    try:
        action(ticket)
    except ValidationError as exc:
        db.session.rollback()
        ticket = _ticket_or_404(reference)
        errors = {"errors": exc.errors} if reply_form is not None else {"note_errors": exc.errors}
        return render_template("tickets/detail.html", **_detail_context(ticket, reply_form, **errors)), 422
    commit()
    flash(done, "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.post("/<reference>/reply")
def reply(reference: str):
    form = {k: request.form.get(k, "") for k in ("to", "cc", "text", "set_status")}
    return _write(reference, lambda t: svc.reply(t, current_user, **form),
                  "Reply queued; its delivery shows on the conversation.", reply_form=form)


@bp.post("/<reference>/note")
def note(reference: str):
    return _write(reference, lambda t: svc.add_note(t, current_user, request.form.get("note", "")),
                  "Internal note added.")


@bp.post("/<reference>/status")
def status(reference: str):
    ticket = _ticket_or_404(reference)
    try:
        changed = svc.change_status(ticket, request.form.get("status", ""), current_user)
    except ValidationError as exc:
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("tickets.detail", reference=ticket.reference))
    commit()
    if changed:
        flash(f"{ticket.reference} is now {ticket.status}.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/messages/<int:message_id>/source")
def source(reference: str, message_id: int):
    """The email exactly as received or sent, as plain text (never rendered)."""
    ticket = _ticket_or_404(reference)
    message = db.session.scalar(select(Message).where(Message.id == message_id, Message.ticket_id == ticket.id))
    if message is None:
        abort(404)
    raw = message.raw_out if message.direction == "out" else (message.raw_message.raw if message.raw_message else None)
    if raw is None:
        abort(404)
    return Response(raw, mimetype="text/plain", headers={"Content-Disposition": "inline",
                                                         "X-Content-Type-Options": "nosniff"})

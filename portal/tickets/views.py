from __future__ import annotations

import base64
import io

from flask import Response, abort, current_app, flash, g, render_template, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select

from portal import tenancy
from portal.display import viewer_timezone
from portal.extensions import db
from portal.mail.sanitize import sanitize_html
from portal.models import Attachment, Message
from portal.outbound import outbox
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError, canned, ticket_export, ticket_list, ticket_replies
from portal.services import tickets as svc
from portal.tickets.blueprint import bp
from portal.tickets.forms import NoteForm, ReplyForm
from portal.tickets.page import (detail_context, file_limits, filesize, form_error, fragment_wanted, parts,
                                 ticket_or_404)

bp.add_app_template_filter(filesize, "filesize")
bp.add_app_template_global(outbox.SENT_AGAIN, "sent_again_states")  # the mail that offers Send again


def _filters() -> ticket_list.TicketFilters:
    args = request.args
    return ticket_list.TicketFilters(
        q=args.get("q", "").strip(), status=args.get("status", ""), client_id=args.get("client", type=int),
        priority=args.get("priority", ""), mailbox_id=args.get("mailbox", type=int),
        assignee_id=args.get("assignee", type=int), new_information=args.get("new") == "1",
        field_id=args.get("field", type=int), field_value=args.get("value", "")[:500],
        sla=args.get("sla", "") if args.get("sla") in ticket_list.SLA_FILTERS else "", tz=viewer_timezone())


@bp.get("")
def index():
    filters = _filters()
    page = ticket_list.list_tickets(g.msp_id, filters, sort=request.args.get("sort", ""),
                                    order=request.args.get("order", ""), cursor=request.args.get("cursor", ""),
                                    per_page=current_app.config["TIDEMARK_PAGE_SIZE"])
    # The filters and the order, for links that keep them (sort headers, newer/older).
    args = {k: v for k, v in request.args.items() if k not in ("cursor", "page", "sort", "order") and v}
    return render_page("tickets/index.html", "tickets/_list.html", tickets=page.tickets, listing=page,
                       filters=filters, args=args, sorts=ticket_list.SORTS, sla_filters=ticket_list.SLA_FILTERS,
                       choices=ticket_list.filter_choices(g.msp_id))


@bp.get("/export.csv")
def export():
    """The list as filtered, as CSV: one column per custom field."""
    text, capped = ticket_export.tickets_csv(g.msp_id, _filters())
    response = Response(text, mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=tickets.csv"
    if capped:
        response.headers["X-Tidemark-Capped"] = str(ticket_export.EXPORT_MAX)
    return response


@bp.get("/<reference>")
def detail(reference: str):
    ticket = ticket_or_404(reference)
    svc.mark_read(ticket)
    return render_template("tickets/detail.html", **detail_context(ticket))


def _uploads(field: str, limit: int, *, inline: bool) -> list[ticket_replies.ReplyFile]:
    """Uploaded files, each read to one byte past the limit (enough to say it is too big).
    Inline images are named by their Content-ID (the composer does so)."""
    found = []
    for upload in request.files.getlist(field):
        if not upload or not upload.filename:
            continue
        cid = upload.filename if inline else None
        if inline and not ticket_replies.CONTENT_ID.match(cid):
            continue
        found.append(ticket_replies.ReplyFile(filename=upload.filename, content_id=cid,
                                              content_type=upload.mimetype or "", data=upload.read(limit + 1)))
    return found


def _with_images_back(html: str, files: list[ticket_replies.ReplyFile]) -> str:
    """The editor cannot show cid: images: give the posted ones back as data: URLs."""
    for f in files:
        if (f.content_id and f.content_type in ticket_replies.INLINE_IMAGE_TYPES
                and len(f.data) <= 5 * ticket_replies.MB):
            data = base64.b64encode(f.data).decode("ascii")
            html = html.replace(f'src="cid:{f.content_id}"', f'src="data:{f.content_type};base64,{data}"')
    return html


@bp.post("/<reference>/reply")
def reply(reference: str):
    ticket = ticket_or_404(reference)
    form = ReplyForm()
    limits = file_limits()
    attachments = _uploads("attachments", limits.each, inline=False)
    images = _uploads("inline_images", limits.each, inline=True)
    try:
        ticket_replies.reply(ticket, current_user, **form.values(), files=[*attachments, *images], limits=limits)
    except ValidationError as exc:
        # Shown again as typed; browsers never refill a file field, so the files are named.
        form.html.data = _with_images_back(form.html.data or "", images)
        form.service_errors = exc.errors
        return form_error(reference, "tickets/_reply.html", reply_form=form,
                          files_lost=[ticket_replies.clean_filename(f.filename) for f in attachments])
    flash("Reply queued; its delivery shows on the conversation.", "success")
    # The status, the facts and the conversation all change: the whole page again.
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/history")
def history(reference: str):
    """The earlier conversation quoted, for the composer to insert (HTML, escaped here). It goes
    to the customer: its dates read in the client's time zone, not the technician's."""
    ticket = ticket_or_404(reference)
    return Response(ticket_replies.quoted_history(ticket, tenancy.timezone_of(ticket.client),
                                                   tenancy.language_of(ticket.client)), mimetype="text/html")


@bp.get("/<reference>/canned/<int:response_id>")
def canned_body(reference: str, response_id: int):
    """One canned response this ticket's client may use, as HTML for the composer."""
    ticket = ticket_or_404(reference)
    response = canned.get_in_effect(ticket.client, response_id)
    if response is None:
        abort(404)
    return Response(sanitize_html(response.body_html), mimetype="text/html")


# Shown in the browser when asked for; anything else is downloaded, and nothing in it may run.
VIEWABLE = ("image/png", "image/jpeg", "image/gif", "image/webp", "text/plain")


@bp.get("/<reference>/attachments/<int:attachment_id>")
def attachment(reference: str, attachment_id: int):
    ticket = ticket_or_404(reference)
    found = db.session.scalar(select(Attachment).join(Message, Attachment.message_id == Message.id)
                              .where(Attachment.id == attachment_id, Message.ticket_id == ticket.id))
    if found is None:
        abort(404)
    viewable = found.content_type in VIEWABLE
    resp = send_file(io.BytesIO(found.data), mimetype=found.content_type if viewable else "application/octet-stream",
                     as_attachment=not viewable, download_name=found.filename, max_age=0)
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src 'self' data:"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.post("/<reference>/note")
def note(reference: str):
    ticket = ticket_or_404(reference)
    form = NoteForm()
    try:
        ticket_replies.add_note(ticket, current_user, form.note.data or "")
    except ValidationError as exc:
        form.service_errors = exc.errors
        return form_error(reference, "tickets/_note.html", note_form=form)
    flash("Internal note added.", "success")
    if fragment_wanted():
        return parts(ticket, "tickets/_note.html", "tickets/_conversation.html")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))


@bp.get("/<reference>/messages/<int:message_id>/source")
def source(reference: str, message_id: int):
    """The email exactly as received or sent, as plain text (never rendered)."""
    ticket = ticket_or_404(reference)
    message = db.session.scalar(select(Message).where(Message.id == message_id, Message.ticket_id == ticket.id))
    if message is None:
        abort(404)
    raw = message.raw_out if message.direction == "out" else (message.raw_message.raw if message.raw_message else None)
    if raw is None:
        abort(404)
    return Response(raw, mimetype="text/plain", headers={"Content-Disposition": "inline",
                                                         "X-Content-Type-Options": "nosniff"})


@bp.post("/<reference>/messages/<int:message_id>/send-again")
@asks_first("Send this mail again")
def send_again(reference: str, message_id: int):
    ticket = ticket_or_404(reference)
    message = db.session.scalar(select(Message).where(Message.id == message_id, Message.ticket_id == ticket.id))
    if message is None:
        abort(404)
    try:
        outbox.send_again(message, current_user)
    except ValidationError as exc:
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
    else:
        flash("Queued again; its delivery shows on the conversation.", "success")
    return hx_redirect(url_for("tickets.detail", reference=ticket.reference))

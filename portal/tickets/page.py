"""What one ticket's page shows, for every module that draws it or a part of it: the ticket
looked up within the signed-in MSP (404 otherwise), and the context of each fragment."""

from __future__ import annotations

from flask import abort, current_app, g, url_for

from portal.mail.parse import html_content_ids
from portal.mail.sanitize import sanitize_html
from portal.services import canned
from portal.services import tickets as svc

CHANGES_PAGE = 20


def ticket_or_404(reference: str):
    ticket = svc.get_ticket(g.msp_id, reference)
    if ticket is None:
        abort(404)
    return ticket


def file_limits() -> svc.FileLimits:
    cfg = current_app.config
    return svc.FileLimits(each=cfg["TIDEMARK_REPLY_FILE_MAX_BYTES"], total=cfg["TIDEMARK_REPLY_FILES_MAX_BYTES"])


def shown_html(ticket, messages) -> tuple[dict[int, str], set[int]]:
    """The HTML bodies shown (inbound mail and replies; automatic mail keeps its rendered
    template, shown as text), with cid: images pointed at their download URL; and the ids of
    the attachments they show, which are part of the text, not files to list."""
    shown, in_body = {}, set()
    for m in messages:
        if not m.body_html or not (m.direction == "in" or m.details.get("event") == "reply"):
            continue
        cids = {a.content_id: a for a in m.attachments if a.content_id}
        shown[m.id] = m.body_html
        if cids:
            shown[m.id] = sanitize_html(m.body_html, cid_urls={
                cid: url_for("tickets.attachment", reference=ticket.reference, attachment_id=a.id)
                for cid, a in cids.items()})
            in_body.update(a.id for cid, a in cids.items() if cid in html_content_ids(m.body_html))
    return shown, in_body


def changes_context(ticket, page: int = 1) -> dict:
    entries, total = svc.ticket_changes(ticket, page=page, per_page=CHANGES_PAGE)
    return dict(history=entries, history_total=total, history_page=page,
                history_pages=max(1, -(-total // CHANGES_PAGE)))


def fields_context(ticket) -> dict:
    """What the fields form offers: the MSP's users (and a disabled one still holding the ticket)."""
    users = svc.assignable_users(ticket.msp_id)
    current = svc.assignee_of(ticket)
    if current is not None and current not in users:
        users.append(current)
    return dict(assignees=users, priorities=svc.PRIORITIES, types=svc.types_in_use(ticket.msp_id),
                **changes_context(ticket))


def conversation_context(ticket) -> dict:
    messages = svc.conversation(ticket)
    html, in_body = shown_html(ticket, messages)
    return dict(messages=messages, shown_html=html, in_body=in_body)


def detail_context(ticket, reply_form=None, errors=None, note_errors=None) -> dict:
    """Everything the whole page draws; a form posted back with errors comes in as it was typed."""
    to, cc = svc.reply_defaults(ticket)
    return dict(ticket=ticket, links=svc.linked_tickets(ticket),
                reply=reply_form or {"to": ", ".join(to), "cc": ", ".join(cc), "text": "", "html": "", "set_status": ""},
                errors=errors or {}, note_errors=note_errors or {}, statuses=svc.WORK_STATUSES,
                canned=canned.in_effect(ticket.client), limits=file_limits(),
                **conversation_context(ticket), **fields_context(ticket))

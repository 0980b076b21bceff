"""What one ticket's page shows, for every module that draws it or a part of it: the ticket
looked up within the signed-in MSP (404 otherwise), the context of each fragment, and the
answer to a form: its fragment for htmx, the whole page (or a redirect) without JavaScript."""

from __future__ import annotations

from flask import abort, current_app, g, render_template, url_for
from flask_login import current_user
from flask_htmx.responses import make_response

from portal.extensions import db, htmx
from portal.mail.html_body import html_content_ids
from portal.mail.sanitize import sanitize_html
from portal.services import canned, custom_fields, sla, ticket_replies
from portal.services import tickets as svc
from portal.tickets.forms import FieldsForm, NoteForm, ReplyForm

CHANGES_PAGE = 20


def filesize(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    return f"{max(1, round(n / 1024))} KB" if n >= 1024 else f"{n} bytes"


def ticket_or_404(reference: str):
    ticket = svc.get_ticket(g.msp_id, reference)
    if ticket is None:
        abort(404)
    return ticket


def file_limits() -> ticket_replies.FileLimits:
    cfg = current_app.config
    return ticket_replies.FileLimits(each=cfg["TIDEMARK_REPLY_FILE_MAX_BYTES"],
                                     total=cfg["TIDEMARK_REPLY_FILES_MAX_BYTES"])


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


def assignees_of(ticket) -> list:
    """Whom the ticket may be given: the MSP's users (and a disabled one still holding it)."""
    users = svc.assignable_users(ticket.msp_id)
    current = svc.assignee_of(ticket)
    if current is not None and current not in users:
        users.append(current)
    return users


def facts_context(ticket, assignees: list | None = None) -> dict:
    """The facts at the top: who holds it and the linked tickets."""
    return dict(assignees=assignees if assignees is not None else assignees_of(ticket),
                links=svc.linked_tickets(ticket))


def fields_form_context(ticket, fields_form: FieldsForm | None = None, assignees: list | None = None) -> dict:
    """The fields form, offering the MSP's users and the types already in use."""
    assignees = assignees if assignees is not None else assignees_of(ticket)
    fields_form = fields_form or FieldsForm.of(ticket)
    fields_form.offer(svc.PRIORITIES, assignees)
    # The MSP's allowed types when it has a list (only those are accepted), else those in use.
    return dict(fields_form=fields_form, assignees=assignees, priorities=svc.PRIORITIES,
                types=custom_fields.ticket_types(ticket.msp_id) or svc.types_in_use(ticket.msp_id))


def custom_fields_context(ticket, custom_values: dict | None = None, custom_errors: dict | None = None) -> dict:
    """The MSP's custom fields with the ticket's values (or the values as posted, with errors)."""
    fields = custom_fields.list_fields(ticket.msp_id)
    if custom_values is None:
        stored = custom_fields.ticket_values(ticket) if fields else {}
        custom_values = {f"cf{f.id}": stored.get(f.id, "") for f in fields}
    return dict(custom_fields=fields, custom_values=custom_values, custom_errors=custom_errors or {})


def sla_context(ticket) -> dict:
    """The SLA card: the ticket's policy, its clocks, and the MSP's policies to choose from."""
    return dict(sla=sla.ticket_sla(ticket), sla_policies=sla.policies(ticket.msp_id))


def conversation_context(ticket) -> dict:
    """The customer's conversation with the notes, and the staff's mail (alerts) apart."""
    everything = svc.conversation(ticket)
    html, in_body = shown_html(ticket, everything)
    staff = svc.staff_mail(everything)
    return dict(messages=[m for m in everything if m.id not in staff],
                staff_messages=[m for m in everything if m.id in staff], shown_html=html, in_body=in_body)


def detail_context(ticket, *, reply_form: ReplyForm | None = None, files_lost=(), fields_form: FieldsForm | None = None,
                   note_form: NoteForm | None = None, custom_values: dict | None = None,
                   custom_errors: dict | None = None) -> dict:
    """Everything the whole page draws; a form posted back with errors comes in as it was typed."""
    limits = file_limits()
    reply_form = reply_form or ReplyForm.of(ticket, current_user)
    reply_form.offer(ticket, limits, filesize)
    assignees = assignees_of(ticket)
    return dict(ticket=ticket, reply_form=reply_form, files_lost=list(files_lost),
                shows_signature=ticket_replies.template_shows_signature(ticket),
                note_form=note_form or NoteForm(formdata=None),
                canned=canned.in_effect(ticket.client), limits=limits, **conversation_context(ticket),
                **(facts_context(ticket, assignees) | fields_form_context(ticket, fields_form, assignees)),
                **custom_fields_context(ticket, custom_values, custom_errors), **changes_context(ticket),
                **sla_context(ticket))


# What each part of the page the live pages ask for again needs, and no more (portal.tickets.live).
PART_CONTEXTS = {"conversation": ("tickets/_conversation.html", conversation_context),
                 "staff": ("tickets/_staff.html", conversation_context),
                 "facts": ("tickets/_facts.html", facts_context),
                 "fields": ("tickets/_fields.html", fields_form_context),
                 "sla": ("tickets/_sla.html", sla_context)}


# Sent when a ticket's fields changed in place: the parts of the page showing them refresh.
CHANGED = "ticket-changed"


def fragment_wanted() -> bool:
    """An htmx form swaps its own part of the page; without JavaScript (or on a boosted
    navigation) the browser gets whole pages and redirects, as before."""
    return bool(htmx) and not htmx.boosted


def parts(ticket, *templates: str, status: int = 200, trigger: str | None = None, **forms):
    """Parts of the ticket page for htmx: the first replaces the part that posted, the others
    swap in by their id (out of band); `trigger` tells the rest of the page to refresh itself."""
    context = detail_context(ticket, **forms)
    body = "".join(render_template(t, fragment=True, oob=i > 0, **context) for i, t in enumerate(templates))
    return make_response(body, status, trigger=trigger)


def form_error(reference: str, fragment: str, **forms):
    """Bad input: the form again with the messages beside its fields (422); the fragment for
    htmx, else the whole page."""
    db.session.rollback()
    ticket = ticket_or_404(reference)
    if fragment_wanted():
        return parts(ticket, fragment, status=422, **forms)
    return render_template("tickets/detail.html", **detail_context(ticket, **forms)), 422

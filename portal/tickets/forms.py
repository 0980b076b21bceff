"""The forms of a ticket's page. The services check what is posted and answer a ValidationError
by field; these forms name, label and draw the fields, and carry those messages back beside them.
CSRFProtect checks every POST already, so the forms do not check it a second time."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import SelectField, StringField, TextAreaField

from portal.services import ticket_replies
from portal.services import tickets as svc


class _Form(FlaskForm):
    class Meta:
        csrf = False

    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}


class FieldsForm(_Form):
    status = SelectField("Status", id="field-status")
    priority = SelectField("Priority", id="field-priority")
    assignee = SelectField("Assigned to", id="field-assignee")
    type = StringField("Type", id="field-type",
                       render_kw={"maxlength": svc.TYPE_MAX, "list": "ticket-types", "placeholder": "e.g. incident"})

    @classmethod
    def of(cls, ticket) -> FieldsForm:
        """The form as the ticket is now."""
        return cls(formdata=None, data={"status": ticket.status, "priority": ticket.priority, "type": ticket.type or "",
                                        "assignee": str(ticket.assignee_id) if ticket.assignee_id else ""})

    def offer(self, priorities, assignees) -> None:
        self.status.choices = list(svc.WORK_STATUSES)
        self.priority.choices = list(priorities)
        self.assignee.choices = [("", "Nobody")] + [
            (str(u.id), f"{u.name or u.email} ({u.role}{', disabled' if u.disabled else ''})") for u in assignees]

    def values(self) -> svc.FieldsInput:
        return svc.FieldsInput(priority=self.priority.data or "", assignee=self.assignee.data or "",
                               type=self.type.data or "", status=self.status.data or "")


class ReplyForm(_Form):
    from_address = SelectField("From", id="reply-from", validate_choice=False,
                               description="Any address of the ticket's mailbox; replies to it come back here.")
    to = StringField("To", id="reply-to")
    cc = StringField("Cc", id="reply-cc")
    # The composer wraps the text and keeps its HTML in `html`: drawn by hand in _reply.html.
    text = TextAreaField("Message", id="reply-text")
    html = TextAreaField()
    # Shown and editable: exactly what is sent under the reply (empty: none).
    signature = TextAreaField("Signature", id="reply-signature",
                              description="Sent under your reply as shown here; clear it to send none.")
    attachments = MultipleFileField("Attach files", id="reply-files")
    set_status = SelectField("and set status", id="reply-status")

    @classmethod
    def of(cls, ticket, author) -> ReplyForm:
        """An empty reply to whoever wrote last, with the ticket's CC and the author's signature."""
        to, cc, left_out = ticket_replies.reply_defaults(ticket)
        choices = ticket_replies.from_choices(ticket)
        form = cls(formdata=None, data={"to": ", ".join(to), "cc": ", ".join(cc), "set_status": "",
                                        "from_address": choices[0] if choices else "",
                                        "signature": ticket_replies.reply_signature(ticket, author)})
        if left_out:
            form.cc.description = (f"The last mail named {left_out:,} more addresses, left out here: a reply goes "
                                   f"to at most {ticket_replies.MAX_RECIPIENTS} addresses.")
        return form

    def offer(self, ticket, limits: ticket_replies.FileLimits, filesize) -> None:
        self.set_status.choices = [("", f"(leave as {ticket.status})")] + [(s, s) for s in svc.WORK_STATUSES]
        self.from_address.choices = [(a, a) for a in ticket_replies.from_choices(ticket)]
        self.attachments.description = (f"Up to {filesize(limits.each)} each and {filesize(limits.total)} in all, "
                                        "images pasted into the text included.")

    def values(self) -> dict[str, str]:
        values: dict = {k: getattr(self, k).data or "" for k in ("to", "cc", "text", "html", "set_status",
                                                                 "from_address")}
        # Not posted at all (a client without the field): the default signature; posted empty: none.
        values["signature"] = (self.signature.data or "") if self.signature.raw_data else None
        return values


class NoteForm(_Form):
    note = TextAreaField("Note (never emailed)", id="note-text")

"""The inbound pipeline, DESIGN steps 3–9, for one stored raw message at a time.

Every decision is written to the message's trace in plain words. Flush, never commit: the
caller wraps each message in a savepoint so one bad message does not stop the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, time, timezone

from sqlalchemy import or_, select, update

from portal.extensions import db
from portal.mail.classify import Classification, classify
from portal.mail.cut import cut_body
from portal.mail.fingerprint import fingerprints
from portal.mail.parse import ParsedEmail, parse_email
from portal.mail.refs import REPLY_MARKER, RefFormat
from portal.mail.route import MailFacts, RouteChoice, RouteRule, choose_by_default_order, choose_route, sender_matches, strip_plus
from portal.mail.sanitize import sanitize_html
from portal.mail.rules import APPEND, NEW_IN_MAILBOX_CLIENT, NEW_LINKED, StatusAction, action_for
from portal.models import AllowEntry, Attachment, Client, Contact, Mailbox, Message, RawMessage, Ticket, TicketLink
from portal.models.base import utcnow
from portal.services.clients import tree_clients

# Envelope headers that may carry the plus address when To/Cc do not (BCC, forwarding).
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to")


@dataclass
class IngestResult:
    outcome: str
    message: Message
    ticket: Ticket | None = None
    trace: list[str] = field(default_factory=list)


class IngestContext:
    """What every message of one mailbox needs, loaded once per batch."""

    def __init__(self, mailbox: Mailbox, secret: bytes):
        self.mailbox = mailbox
        self.secret = secret
        clients = tree_clients(mailbox.msp_id)
        self.clients = {c.id: c for c in clients}
        self.msp = self.clients[mailbox.msp_id]
        self.ref_format = RefFormat(prefix=self.msp.reference_prefix or "T")
        self.addresses = {a.lower() for a in mailbox.addresses}
        self.rules = [
            RouteRule(r.id, r.name, r.client_id, tuple(r.recipients), tuple(r.senders), tuple(r.subject_keywords),
                      tuple(r.attachment_types), r.high_importance_only, r.fallback, r.enabled)
            for r in mailbox.routes
        ]
        self.routes_by_id = {r.id: r for r in mailbox.routes}
        subtree = self._subtree(mailbox.client_id)
        self.allowed_addresses: dict[str, int] = {}
        self.allowed_domains: dict[str, int] = {}
        for entry in db.session.scalars(select(AllowEntry).where(AllowEntry.msp_id == mailbox.msp_id)):
            if entry.client_id in subtree:
                target = self.allowed_addresses if entry.kind == "address" else self.allowed_domains
                target[entry.value] = entry.client_id

    def _subtree(self, root_id: int) -> set[int]:
        found, todo = {root_id}, [root_id]
        kids: dict[int | None, list[int]] = {}
        for c in self.clients.values():
            kids.setdefault(c.parent_id, []).append(c.id)
        while todo:
            for child in kids.get(todo.pop(), []):
                found.add(child)
                todo.append(child)
        return found

    def disabled(self, client_id: int) -> bool:
        node = self.clients.get(client_id)
        while node is not None:
            if node.disabled:
                return True
            node = self.clients.get(node.parent_id)
        return False

    def waterline(self, client_id: int) -> str | None:
        node = self.clients.get(client_id)
        while node is not None:
            if node.waterline:
                return node.waterline
            node = self.clients.get(node.parent_id)
        return None

    def client_allows(self, client_id: int, sender: str) -> bool:
        if self.allowed_addresses.get(sender) == client_id:
            return True
        domain = sender.rpartition("@")[2]
        labels = domain.split(".")
        return any(self.allowed_domains.get(".".join(labels[i:])) == client_id for i in range(len(labels) - 1))


# --- the pipeline --------------------------------------------------------------------------------


def ingest(raw: RawMessage, ctx: IngestContext) -> IngestResult:
    mailbox = ctx.mailbox
    trace: list[str] = []
    message = _existing_or_new_message(raw, mailbox)
    if raw.raw is None:
        message.outcome = "unprocessed"
        trace.append(f"kept without processing: {raw.size:,} bytes is over the size limit")
        return _finish(message, trace, None)

    parsed = parse_email(raw.raw)
    cls = classify(parsed)
    fps = fingerprints(raw.raw, parsed)
    _fill_message(message, parsed, cls, fps)
    if parsed.defects:
        trace.append("parse: " + "; ".join(parsed.defects[:5]) + (" …" if len(parsed.defects) > 5 else ""))

    # 3. our own mail
    if parsed.message_id and db.session.scalar(
        select(Message.id).where(Message.msp_id == mailbox.msp_id, Message.direction == "out",
                                 Message.message_id == parsed.message_id).limit(1)
    ):
        message.outcome = "own"
        trace.append(f"own mail: we sent {parsed.message_id}; recorded, not processed again")
        return _finish(message, trace, None)

    # 4. duplicate within this mailbox
    first = _first_copy(message, mailbox.id)
    if first is not None:
        message.outcome = "duplicate"
        message.duplicate_of_id = first.duplicate_of_id or first.id
        which = "the same raw message" if first.fp_raw == message.fp_raw else (
            "the same content" if first.fp_content == message.fp_content else "the same envelope")
        trace.append(f"duplicate of message {message.duplicate_of_id} ({which}); creates nothing")
        return _finish(message, trace, None)

    # 5. classify
    if cls.auto_generated:
        trace.append(f"auto-generated: {cls.auto_reason}")
    if cls.bounce:
        trace.append("bounce for " + (", ".join(cls.bounced_recipients) or "unknown recipients"))
    if cls.priority != "normal":
        trace.append(f"priority {cls.priority}")
    sender = (parsed.from_.address if parsed.from_ else "").lower()
    ignored = _ignore_reason(mailbox, sender, parsed.subject)
    if ignored is None and mailbox.sync_start_date and parsed.date:
        if parsed.date < datetime.combine(mailbox.sync_start_date, time.min, tzinfo=timezone.utc):
            ignored = f"dated {parsed.date.date()}, before the sync start date {mailbox.sync_start_date}"
    if ignored:
        message.outcome = "ignored"
        trace.append(f"ignored: {ignored}")
        return _finish(message, trace, None)

    # 6. thread
    matched, how, quiet_parent = _thread(parsed, cls, sender, ctx, trace)
    ticket: Ticket | None = None
    if matched is not None:
        ticket = _apply_to_ticket(matched, how, message, parsed, cls, sender, quiet_parent, ctx, trace)
        if ticket is not None:
            return _finish(message, trace, ticket)

    # 8. route new mail
    facts = _facts(parsed, cls, sender)
    if ctx.rules:
        choice = choose_route(ctx.rules, facts, mailbox.address, mailbox.aliases)
    else:
        contact_client = db.session.scalar(
            select(Contact.client_id).where(Contact.msp_id == mailbox.msp_id, Contact.email == sender))
        choice = choose_by_default_order(
            facts, mailbox.address, mailbox.aliases, allowed_addresses=ctx.allowed_addresses,
            allowed_domains=ctx.allowed_domains, contact_client=contact_client, mailbox_client=mailbox.client_id)
    trace.extend(choice.trace)
    if choice.client_id is None:
        message.outcome = "unprocessed"
        trace.append(f"unprocessed: {choice.reason}")
        return _finish(message, trace, None)
    client_id = choice.client_id
    if ctx.disabled(client_id):
        trace.append(f"route: {choice.reason} → {ctx.clients[client_id].name}, which is disabled; "
                      "the mailbox's own client takes it")
        client_id = mailbox.client_id
    else:
        trace.append(f"route: {choice.reason} → {ctx.clients[client_id].name}")

    # 9. create
    ticket = _create_ticket(client_id, message, parsed, cls, sender, ctx, choice, trace)
    return _finish(message, trace, ticket)


# --- steps -----------------------------------------------------------------------------------------


def _existing_or_new_message(raw: RawMessage, mailbox: Mailbox) -> Message:
    message = db.session.scalar(select(Message).where(Message.raw_message_id == raw.id))
    if message is None:
        message = Message(msp_id=mailbox.msp_id, mailbox_id=mailbox.id, raw_message_id=raw.id, direction="in")
        db.session.add(message)
    else:  # re-processing mail that found no ticket: the raw bytes decide afresh
        message.duplicate_of_id = None
        message.attachments.clear()
    return message


def refresh_on_ticket(raw: RawMessage, ctx: IngestContext) -> IngestResult:
    """Re-processing mail that is already on a ticket: derive its parsed form and cut body
    again from the raw bytes, and leave it where it is (no second ticket)."""
    message = db.session.scalar(select(Message).where(Message.raw_message_id == raw.id))
    parsed = parse_email(raw.raw)
    _fill_message(message, parsed, classify(parsed), fingerprints(raw.raw, parsed))
    _cut(message, parsed, ctx, message.ticket.client_id)
    message.attachments.clear()
    _store_attachments(message, parsed, ctx)
    trace = [*(message.trace or []), f"re-processed: read again from the stored bytes, kept on {message.ticket.reference}"]
    return _finish(message, trace, message.ticket)


def _fill_message(message: Message, parsed: ParsedEmail, cls: Classification, fps) -> None:
    message.message_id = (parsed.message_id or None) and parsed.message_id[:998]
    message.in_reply_to = (parsed.in_reply_to or None) and parsed.in_reply_to[:998]
    message.references = parsed.references[-50:]
    message.from_address = (parsed.from_.address if parsed.from_ else "")[:320]
    message.from_name = (parsed.from_.name if parsed.from_ else "")[:200]
    message.to = [{"name": a.name, "address": a.address} for a in parsed.to]
    message.cc = [{"name": a.name, "address": a.address} for a in parsed.cc]
    message.subject = parsed.subject[:998]
    message.sent_at = parsed.date
    message.full_text = parsed.text
    message.body_text = parsed.text
    message.body_html = parsed.html_safe
    message.auto_generated = cls.auto_generated
    message.auto_reason = (cls.auto_reason or None) and cls.auto_reason[:200]
    message.priority = cls.priority
    message.fp_raw, message.fp_content, message.fp_envelope = fps.raw, fps.content, fps.envelope
    message.details = {"bounce": cls.bounce, "bounced_recipients": cls.bounced_recipients,
                       "out_of_office": cls.out_of_office, "defects": parsed.defects[:20]}


def _first_copy(message: Message, mailbox_id: int) -> Message | None:
    """The earliest message of this mailbox with any of the three fingerprints. Three
    queries, one per fingerprint index: an OR over the three columns would scan the table."""
    db.session.flush()  # gives this message its id, so it never matches itself
    found: list[int] = []
    for column, value in ((Message.fp_raw, message.fp_raw), (Message.fp_content, message.fp_content),
                          (Message.fp_envelope, message.fp_envelope)):
        if not value:
            continue
        query = select(Message.id).where(Message.mailbox_id == mailbox_id, column == value,
                                         Message.direction == "in", Message.id != message.id)
        first = db.session.scalar(query.order_by(Message.id).limit(1))
        if first is not None:
            found.append(first)
    return db.session.get(Message, min(found)) if found else None


def _ignore_reason(mailbox: Mailbox, sender: str, subject: str) -> str | None:
    for pattern in mailbox.ignore_senders:
        if pattern and sender and sender_matches(pattern, sender):
            return f"sender {sender} matches the ignore list entry {pattern!r}"
    lowered = (subject or "").lower()
    for keyword in mailbox.ignore_subjects:
        if keyword and keyword.lower() in lowered:
            return f"subject contains the ignored keyword {keyword!r}"
    return None


def _ticket_by_ref(ctx: IngestContext, ref: str) -> Ticket | None:
    return db.session.scalar(select(Ticket).where(Ticket.msp_id == ctx.mailbox.msp_id, Ticket.reference == ref))


def _sender_may_write(ticket: Ticket, sender: str, ctx: IngestContext) -> bool:
    if ticket.contact is not None and ticket.contact.email == sender:
        return True
    if sender in (c.lower() for c in ticket.cc):
        return True
    return ctx.client_allows(ticket.client_id, sender)


def _thread(parsed: ParsedEmail, cls: Classification, sender: str, ctx: IngestContext, trace: list[str]):
    """(ticket, how, quiet) for the first rule that matches, else (None, None, False)."""
    mode = ctx.mailbox.plus_addressing
    fmt = ctx.ref_format
    if mode in ("mixed", "only"):
        recipients = [a.address for a in (*parsed.to, *parsed.cc, *parsed.bcc)]
        recipients += [v for k, v in parsed.headers if k.lower() in _ENVELOPE_HEADERS]
        for ref in fmt.refs_in_recipients(recipients, ctx.secret):
            ticket = _ticket_by_ref(ctx, ref)
            if ticket is not None:
                return ticket, f"plus address tag {ref}", False
        if mode == "only":
            trace.append("thread: plus-addressing only, no signed tag: new conversation")
            return None, None, False

    wanted = [m for m in [parsed.in_reply_to, *reversed(parsed.references), cls.bounce_original_message_id] if m]
    if wanted:
        known = db.session.execute(
            select(Message.message_id, Message.ticket_id, Message.direction, Message.details)
            .where(Message.msp_id == ctx.mailbox.msp_id, Message.message_id.in_(wanted[:100]),
                   Message.ticket_id.is_not(None))
        ).all()
        by_id = {row.message_id: row for row in known}
        for mid in wanted:
            row = by_id.get(mid)
            if row is not None:
                ticket = db.session.get(Ticket, row.ticket_id)
                quiet = cls.auto_generated and row.direction == "out" and bool((row.details or {}).get("automatic"))
                header = "In-Reply-To" if mid == parsed.in_reply_to else (
                    "References" if mid in parsed.references else "bounced message")
                return ticket, f"{header} matched {mid}", quiet

    for ref in fmt.refs_in_tokens(parsed.text, ctx.secret) or fmt.refs_in_tokens(parsed.html or "", ctx.secret):
        ticket = _ticket_by_ref(ctx, ref)
        if ticket is not None:
            return ticket, f"reference token {ref}", False

    for source, refs in (("subject", fmt.refs_in_subject(parsed.subject)), ("body", fmt.refs_in_body(parsed.text))):
        for ref in refs:
            ticket = _ticket_by_ref(ctx, ref)
            if ticket is None:
                continue
            if _sender_may_write(ticket, sender, ctx):
                return ticket, f"{source} reference {ref}", False
            trace.append(f"thread: {source} reference {ref} ignored: {sender or 'the sender'} is not allowed "
                         f"to write into it (not its contact, CC or on its client's allow-list)")
    return None, None, False


def _apply_to_ticket(matched: Ticket, how: str, message: Message, parsed: ParsedEmail, cls: Classification,
                     sender: str, quiet: bool, ctx: IngestContext, trace: list[str]) -> Ticket | None:
    """Step 7. Returns the ticket the message went onto, or None when a new ticket must be routed."""
    seen = set()
    while matched.status == "merged" and matched.merged_into_id and matched.id not in seen:
        seen.add(matched.id)
        trace.append(f"thread: {matched.reference} was merged into another ticket")
        matched = db.session.get(Ticket, matched.merged_into_id)
    if matched.mailbox_id != ctx.mailbox.id:
        trace.append(f"thread: {how} on {matched.reference}, a ticket of another mailbox: "
                     "new ticket here, linked to it")
        ticket = _create_ticket(matched.client_id if not ctx.disabled(matched.client_id) else ctx.mailbox.client_id,
                                message, parsed, cls, sender, ctx, None, trace)
        _link(ticket, matched, "other-mailbox")
        return ticket
    if matched.status == "split":
        children = list(db.session.scalars(select(Ticket).where(Ticket.split_from_id == matched.id)))
        trace.append(f"thread: {how} on {matched.reference}, which was split: onto "
                     + ", ".join(c.reference for c in children))
        first = None
        for child in children:
            copy = message if first is None else _copy_message(message)
            _append(child, copy, action_for(child.status, client_disabled=False, quiet=quiet), ctx, parsed, trace)
            first = first or child
        return first
    action = action_for(matched.status, client_disabled=ctx.disabled(matched.client_id), quiet=quiet)
    trace.append(f"thread: {how} on {matched.reference}")
    if action.kind == APPEND:
        _append(matched, message, action, ctx, parsed, trace)
        return matched
    trace.append(action.reason)
    client_id = ctx.mailbox.client_id if action.kind == NEW_IN_MAILBOX_CLIENT else matched.client_id
    ticket = _create_ticket(client_id, message, parsed, cls, sender, ctx, None, trace,
                            copy_from=matched if action.kind == NEW_LINKED else None)
    if action.kind == NEW_LINKED:
        _link(ticket, matched, "follow-up")
    return ticket


def _append(ticket: Ticket, message: Message, action: StatusAction, ctx: IngestContext, parsed: ParsedEmail,
            trace: list[str]) -> None:
    message.ticket = ticket
    message.outcome = action.outcome
    _cut(message, parsed, ctx, ticket.client_id)
    if action.new_status and action.new_status != ticket.status:
        trace.append(f"status {ticket.status} → {action.new_status}" + (" (reopened)" if action.outcome == "reopened" else ""))
        ticket.status = action.new_status
    elif action.reason:
        trace.append(action.reason)
    if action.flag_new_information:
        ticket.new_information = True
    ours = ctx.addresses
    contact_email = ticket.contact.email if ticket.contact else None
    for addr in [a.address.lower() for a in (*parsed.to, *parsed.cc)]:
        if strip_plus(addr) not in ours and addr != contact_email and addr not in ticket.cc:
            ticket.cc = [*ticket.cc, addr]
    ticket.updated_at = utcnow()
    _store_attachments(message, parsed, ctx)


def _copy_message(message: Message) -> Message:
    copy = Message(**{c.key: getattr(message, c.key) for c in Message.__table__.columns
                      if c.key not in ("id", "raw_message_id")})
    db.session.add(copy)
    return copy


def _facts(parsed: ParsedEmail, cls: Classification, sender: str) -> MailFacts:
    return MailFacts(
        sender=sender,
        recipients=tuple(strip_plus(a.address) for a in (*parsed.to, *parsed.cc) if a.address),
        subject=parsed.subject,
        attachment_names=tuple(a.filename for a in parsed.attachments),
        attachment_types=tuple(a.content_type for a in parsed.attachments),
        priority=cls.priority,
    )


def _cut(message: Message, parsed: ParsedEmail, ctx: IngestContext, client_id: int) -> None:
    waterline = ctx.waterline(client_id)
    waterlines = [w for w in (waterline, REPLY_MARKER) if w]
    visible = cut_body(parsed.text, parsed.html, waterlines=waterlines, marker=REPLY_MARKER)
    message.body_text = visible.text
    if visible.html is not None:
        message.body_html = sanitize_html(visible.html)


def next_reference(msp_id: int, ref_format: RefFormat) -> tuple[int, str]:
    """The MSP's next ticket number, handed out atomically (one row update)."""
    number = db.session.execute(
        update(Client).where(Client.id == msp_id)
        .values(last_ticket_number=Client.last_ticket_number + 1)
        .returning(Client.last_ticket_number)
    ).scalar_one()
    return number, ref_format.ref(number)


def _contact(ctx: IngestContext, client_id: int, sender: str, name: str) -> Contact | None:
    if not sender:
        return None
    contact = db.session.scalar(select(Contact).where(Contact.msp_id == ctx.mailbox.msp_id, Contact.email == sender))
    if contact is None:
        contact = Contact(msp_id=ctx.mailbox.msp_id, client_id=client_id, email=sender[:320], name=name[:200])
        db.session.add(contact)
    return contact


def _create_ticket(client_id: int, message: Message, parsed: ParsedEmail, cls: Classification, sender: str,
                   ctx: IngestContext, choice: RouteChoice | None, trace: list[str],
                   copy_from: Ticket | None = None) -> Ticket:
    mailbox = ctx.mailbox
    route = ctx.routes_by_id.get(choice.rule.id) if choice and choice.rule else None
    number, reference = next_reference(mailbox.msp_id, ctx.ref_format)
    contact = _contact(ctx, client_id, sender, parsed.from_.name if parsed.from_ else "")
    priority = cls.priority if cls.priority != "normal" else (
        (route.default_priority if route else None) or mailbox.default_priority)
    ticket = Ticket(
        msp_id=mailbox.msp_id, number=number, reference=reference, mailbox_id=mailbox.id, client_id=client_id,
        contact=contact, subject=(parsed.subject or "(no subject)")[:998],
        status=(route.default_status if route else None) or mailbox.default_status,
        priority=priority, type=(route.default_type if route else None) or mailbox.default_type,
        source="email", new_information=True,
        cc=[a.address.lower() for a in parsed.cc if a.address and strip_plus(a.address.lower()) not in ctx.addresses],
    )
    if copy_from is not None:
        # The follow-up keeps everyone who was on the closed ticket.
        ticket.contact = copy_from.contact or contact
        ticket.cc = sorted(set(copy_from.cc) | set(ticket.cc))
    db.session.add(ticket)
    message.ticket = ticket
    message.outcome = "created"
    _cut(message, parsed, ctx, client_id)
    _store_attachments(message, parsed, ctx)
    if mailbox.keep_raw_attachment and message.raw_message is not None:
        raw = message.raw_message.raw or b""
        message.attachments.append(Attachment(filename="original.eml", content_type="message/rfc822", size=len(raw),
                                              sha256=hashlib.sha256(raw).hexdigest(), inline=False, data=raw))
    acknowledge = mailbox.acknowledge and (route.acknowledge if route else True)
    if cls.auto_generated:
        why = "no acknowledgement: the mail is auto-generated"
        acknowledge = False
    elif not acknowledge:
        why = "no acknowledgement: " + ("the route says so" if route and not route.acknowledge else "the mailbox says so")
    else:
        why = "acknowledgement to the sender" + (" and CCs" if route and route.acknowledge_cc else "")
    message.details = {**(message.details or {}), "acknowledge": acknowledge,
                       "acknowledge_cc": bool(acknowledge and route and route.acknowledge_cc),
                       "alert": bool(mailbox.alert_recipients)}
    trace.append(f"created {reference} for {ctx.clients[client_id].name}"
                 + (f", contact {contact.email}" if contact else "") + f"; {why}")
    return ticket


def _store_attachments(message: Message, parsed: ParsedEmail, ctx: IngestContext) -> None:
    for a in parsed.attachments:
        message.attachments.append(Attachment(
            filename=(a.filename or "attachment")[:255], content_type=(a.content_type or "application/octet-stream")[:255],
            size=a.size, sha256=a.sha256, content_id=(a.content_id or None) and a.content_id[:255],
            inline=a.inline, data=a.data))


def _link(ticket: Ticket, other: Ticket, kind: str) -> None:
    db.session.flush()
    db.session.add(TicketLink(ticket_id=ticket.id, linked_id=other.id, kind=kind))


def _finish(message: Message, trace: list[str], ticket: Ticket | None) -> IngestResult:
    message.trace = trace
    if message.raw_message is not None:
        message.raw_message.state = "decided"
        message.raw_message.last_error = None
    db.session.flush()
    return IngestResult(message.outcome, message, ticket, trace)

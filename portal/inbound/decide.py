"""The inbound pipeline, DESIGN steps 2–10, for one stored raw message, in the order DESIGN gives.

A batch is decided in three steps: every message is read (portal.inbound.read, pure Python),
the lookups the whole batch needs are made in a few queries (portal.inbound.lookups), then each
message is decided here in memory against them, and what the batch decided is remembered as it
goes, so a reply finds a ticket created earlier in the same batch. Every decision is written to
the message's trace in plain words. Flush, never commit: the caller (portal.inbound.batch)
commits per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timezone

from sqlalchemy import select

from portal.extensions import db
from portal.inbound.alerts import apply_alert_rule
from portal.inbound.context import IngestContext
from portal.inbound.read import Prepared, prepare
from portal.inbound.tickets import (apply_to_ticket, create_ticket, cut, onto_tagged, plus_tagged, store_attachments,
                                    thread)
from portal.mail.classify import Classification, classify
from portal.mail.compose import LOOP_HEADER
from portal.mail.fingerprint import Fingerprints, fingerprints
from portal.mail.parse import ParsedEmail, parse_email
from portal.mail.route import (
    MailFacts,
    RouteChoice,
    choose_by_default_order,
    choose_route,
    sender_known,
    sender_matches,
    strip_plus,
)
from portal.models import AuditEntry, Mailbox, Message, RawMessage, Ticket
from portal.models.base import utcnow
from portal.services import audit

# The reason an automatic mail that answers no ticket waits among the unprocessed mail.
AUTOMATIC_NO_TICKET = "automatic mail, no ticket"
# Who the mailbox's history names for what the pipeline recorded.
PIPELINE = "inbound mail"


@dataclass
class IngestResult:
    outcome: str
    message: Message
    ticket: Ticket | None = None
    trace: list[str] = field(default_factory=list)
    # (route, what it would have done) for each route in test that matched
    tested: list[tuple[str, str]] = field(default_factory=list)


def decide(stored: RawMessage, ctx: IngestContext, item: Prepared | None = None) -> IngestResult:
    """Decide one stored message. Without `item`, it is read and its lookups made here."""
    if item is None:
        item = prepare(ctx.reading, stored)
        ctx.preload([item])
    with db.session.no_autoflush:
        result = _decide(item, ctx)
    ctx.known.remember(result.message, item.fps, result.ticket)
    ctx.writer.mark_decided(stored)
    return result


def _decide(item: Prepared, ctx: IngestContext) -> IngestResult:
    """Steps 2–10 for a message read ahead; each step either settles it or hands it on."""
    trace: list[str] = []
    message = _message_for(item.stored, ctx)
    # 2. parsed, or kept without its bytes
    if item.parsed is None:
        message.outcome = "unprocessed"
        trace.append(f"kept without processing: {item.stored.size:,} bytes is over the size limit")
        return _finish(message, trace, None)
    parsed = item.parsed
    _fill_message(message, parsed, item.cls, item.fps)
    if parsed.defects:
        trace.append("parse: " + "; ".join(parsed.defects[:5]) + (" …" if len(parsed.defects) > 5 else ""))
    # 3. our own mail; 4. a duplicate within this mailbox; 5. classified, and perhaps ignored
    # (the ignore list, the sync start date, then a sender nothing knows when the mailbox
    # accepts only allowed senders)
    if _own_mail(item, ctx, message, trace) or _duplicate(item, ctx, message, trace) \
            or _ignored(item, ctx, message, trace) or _not_allowed(item, ctx, message, trace):
        return _finish(message, trace, None)
    # 6–7. threaded onto a ticket (onto each one its plus-address tags name), the status rules applied
    tagged = plus_tagged(item, ctx, trace)
    if tagged:
        ticket = onto_tagged(tagged, message, item, ctx, trace)
        if ticket is not None:
            return _finish(message, trace, ticket)
    matched, how, quiet = thread(item, ctx, trace)
    if matched is not None:
        ticket = apply_to_ticket(matched, how, message, item, quiet, ctx, trace)
        if ticket is not None:
            return _finish(message, trace, ticket)
    # 8. new mail: an auto-reply that answers no ticket is recorded, unless the mailbox tickets it.
    # Only auto-replies: monitoring alerts, list mail and bounces are automatic too, and MSPs
    # expect tickets from them (the corpora's expected results open tickets for those).
    if item.cls.out_of_office and not item.cls.bounce and ctx.mailbox.automatic_mail != "ticket":
        _record_automatic(item, ctx, message, trace)
        return _finish(message, trace, None)
    # ... else routed to a client, or left unprocessed
    client_id, choice = _route(item, ctx, message, trace)
    # 9. a route's alert rule: monitoring mail onto its problem's open ticket, or recorded
    decided, ticket = apply_alert_rule(client_id, message, item, ctx, choice, trace) \
        if client_id is not None else (False, None)
    # 9–10. the ticket created; its acknowledgement and alert queued with it
    if not decided:
        ticket = create_ticket(client_id, message, item, ctx, choice, trace) if client_id is not None else None
    result = _finish(message, trace, ticket)
    result.tested = [(rule.name, what) for rule, what in choice.tested]
    return result


# --- steps -----------------------------------------------------------------------------------------


def _message_for(stored: RawMessage, ctx: IngestContext) -> Message:
    message = ctx.known.existing.get(stored.id) if stored.id is not None else None
    if message is None:
        message = Message(msp_id=ctx.mailbox.msp_id, mailbox_id=ctx.mailbox.id, raw_message=stored, direction="in")
        db.session.add(message)
    else:  # re-processing mail that found no ticket: the raw bytes decide afresh
        message.duplicate_of_id = None
        message.attachments.clear()
    return message


def _fill_message(message: Message, parsed: ParsedEmail, cls: Classification, fps: Fingerprints) -> None:
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
    # The HTML to show is set where it is known: cut on a ticket, whole when unprocessed.
    message.body_html = None
    message.auto_generated = cls.auto_generated
    message.auto_reason = (cls.auto_reason or None) and cls.auto_reason[:200]
    message.priority = cls.priority
    message.fp_raw, message.fp_content, message.fp_envelope = fps.raw, fps.content, fps.envelope
    message.details = {"bounce": cls.bounce, "bounced_recipients": cls.bounced_recipients,
                       "out_of_office": cls.out_of_office, "defects": parsed.defects[:20]}


def _own_mail(item: Prepared, ctx: IngestContext, message: Message, trace: list[str]) -> bool:
    """Step 3: mail we sent (its Message-ID, or our loop header) is recorded, not processed again."""
    parsed = item.parsed
    if parsed.message_id and parsed.message_id in ctx.known.own_ids:
        trace.append(f"own mail: we sent {parsed.message_id}; recorded, not processed again")
    elif ctx.host and (parsed.header(LOOP_HEADER) or "").strip().lower() == ctx.host.lower():
        trace.append(f"own mail: it carries our {LOOP_HEADER} header; recorded, not processed again")
    else:
        return False
    message.outcome = "own"
    return True


def _duplicate(item: Prepared, ctx: IngestContext, message: Message, trace: list[str]) -> bool:
    """Step 4: a copy of a message this mailbox has already had is linked to it and creates nothing."""
    first = ctx.known.first_copy(item.fps)
    if first is None:
        return False
    copy, why = first
    message.outcome = "duplicate"
    if isinstance(copy, Message):
        message.duplicate_of = copy.duplicate_of or copy
        shown = "an earlier message of this batch"
    else:
        message.duplicate_of_id = copy
        shown = f"message {copy}"
    trace.append(f"duplicate of {shown} ({why}); creates nothing")
    return True


def _ignored(item: Prepared, ctx: IngestContext, message: Message, trace: list[str]) -> bool:
    """Step 5: what the classification found goes into the trace; mail on the mailbox's ignore
    list, or dated before its sync start date, is recorded as ignored and goes no further."""
    mailbox, parsed, cls = ctx.mailbox, item.parsed, item.cls
    if cls.auto_generated:
        trace.append(f"auto-generated: {cls.auto_reason}")
    if cls.bounce:
        trace.append("bounce for " + (", ".join(cls.bounced_recipients) or "unknown recipients"))
    if cls.priority != "normal":
        trace.append(f"priority {cls.priority}")
    ignored = _ignore_reason(mailbox, item.sender, parsed.subject)
    if ignored is None and mailbox.sync_start_date and parsed.date:
        if parsed.date < datetime.combine(mailbox.sync_start_date, time.min, tzinfo=timezone.utc):
            ignored = f"dated {parsed.date.date()}, before the sync start date {mailbox.sync_start_date}"
    if not ignored:
        return False
    message.outcome = "ignored"
    message.body_html = parsed.html_safe
    trace.append(f"ignored: {ignored}")
    return True


# The reason in the trace, and on the unprocessed pages, for mail a mailbox does not accept.
SENDER_NOT_ALLOWED = "sender not allowed"


def _not_allowed(item: Prepared, ctx: IngestContext, message: Message, trace: list[str]) -> bool:
    """Step 5, last: a mailbox that accepts only allowed senders records mail from a sender no
    client's allow-list in the MSP's tree, nor its contacts, knows as ignored. Before threading,
    so that it reaches no ticket either: it creates nothing and acknowledges nothing."""
    if not ctx.accept_only_allowed:
        return False
    known = sender_known(item.sender, ctx.msp_addresses, ctx.msp_domains, ctx.known.contacts)
    if known:
        trace.append(f"allowed sender: {item.sender} is {known}")
        return False
    message.outcome = "ignored"
    message.body_html = item.parsed.html_safe
    trace.append(f"ignored: {SENDER_NOT_ALLOWED}: {item.sender or 'no sender'} is on no allow-list and no contact; "
                 "this mailbox accepts only allowed senders")
    return True


def _ignore_reason(mailbox: Mailbox, sender: str, subject: str) -> str | None:
    for pattern in mailbox.ignore_senders:
        if pattern and sender and sender_matches(pattern, sender):
            return f"sender {sender} matches the ignore list entry {pattern!r}"
    lowered = (subject or "").lower()
    for keyword in mailbox.ignore_subjects:
        if keyword and keyword.lower() in lowered:
            return f"subject contains the ignored keyword {keyword!r}"
    return None


def _record_automatic(item: Prepared, ctx: IngestContext, message: Message, trace: list[str]) -> None:
    """An auto-reply or out-of-office that threaded to no ticket waits among the
    unprocessed mail: no ticket, so no alert and no open work. Its first decision is also noted
    in the mailbox's history, where an admin looks when asking where such mail went."""
    message.outcome = "unprocessed"
    message.body_html = item.parsed.html_safe
    message.details = {**(message.details or {}), "automatic_no_ticket": True}
    trace.append("automatic mail that threads to no ticket opens none: this mailbox records it")
    trace.append(f"unprocessed: {AUTOMATIC_NO_TICKET}")
    if message.id is None:  # not when a person decides it again
        _note_automatic(ctx.mailbox, item.sender or "unknown sender", item.parsed.subject or "(no subject)")


AUTOMATIC_RECORDED = "recorded automatic mail"
AUTOMATIC_MORE = "more from this sender that day"


def _note_automatic(mailbox: Mailbox, sender: str, subject: str) -> None:
    """One line in the mailbox's history per sender and day (UTC); the sender's other automatic
    mail that day is counted on it, so that an auto-reply loop cannot fill the history."""
    prefix = f"{sender}: "
    since = datetime.combine(utcnow().date(), time(), tzinfo=timezone.utc)
    with db.session.no_autoflush:  # the email being decided is not complete yet
        kept = db.session.scalars(select(AuditEntry).where(
            AuditEntry.msp_id == mailbox.msp_id, AuditEntry.record_type == "mailbox",
            AuditEntry.record_id == mailbox.id, AuditEntry.action == AUTOMATIC_RECORDED, AuditEntry.at >= since))
        pending = [e for e in db.session.new if isinstance(e, AuditEntry) and e.action == AUTOMATIC_RECORDED
                   and (e.record_type, e.record_id) == ("mailbox", mailbox.id)]
        for entry in [*pending, *kept]:
            if (entry.changes.get(AUTOMATIC_NO_TICKET) or [None, ""])[1].startswith(prefix[:300]):
                more = (entry.changes.get(AUTOMATIC_MORE) or [None, 0])[1] + 1
                entry.changes = {**entry.changes, AUTOMATIC_MORE: [None, more]}
                return
    audit.record(None, mailbox.msp_id, "mailbox", mailbox.id, AUTOMATIC_RECORDED,
                 {AUTOMATIC_NO_TICKET: [None, f"{prefix}{subject}"[:300]]}, label=PIPELINE)


def _route(item: Prepared, ctx: IngestContext, message: Message,
           trace: list[str]) -> tuple[int | None, RouteChoice]:
    """Step 8: the client new mail belongs to, by the mailbox's routes or the default order
    (None: unprocessed). A disabled client's mail goes to the mailbox's own client."""
    mailbox, parsed = ctx.mailbox, item.parsed
    facts = _facts(parsed, item.cls, item.sender)
    if ctx.rules:
        choice = choose_route(ctx.rules, facts, mailbox.address, mailbox.aliases,
                              mailbox_priority=ctx.mailbox_priority)
        for rule, _what in choice.tested:
            ctx.route_tests.add(rule.id)
    else:
        contact = ctx.known.contacts.get(item.sender)
        choice = choose_by_default_order(
            facts, mailbox.address, mailbox.aliases, allowed_addresses=ctx.allowed_addresses,
            allowed_domains=ctx.allowed_domains, contact_client=contact.client_id if contact else None,
            mailbox_client=mailbox.client_id)
    trace.extend(choice.trace)
    if choice.client_id is None:
        message.outcome = "unprocessed"
        message.body_html = parsed.html_safe
        trace.append(f"unprocessed: {choice.reason}")
        return None, choice
    client_id = choice.client_id
    if ctx.disabled(client_id):
        trace.append(f"route: {choice.reason} → {ctx.clients[client_id].name}, which is disabled; "
                     "the mailbox's own client takes it")
        client_id = mailbox.client_id
    else:
        trace.append(f"route: {choice.reason} → {ctx.clients[client_id].name}")
    return client_id, choice


def _facts(parsed: ParsedEmail, cls: Classification, sender: str) -> MailFacts:
    return MailFacts(
        sender=sender,
        recipients=tuple(strip_plus(a.address) for a in (*parsed.to, *parsed.cc) if a.address),
        subject=parsed.subject,
        attachment_names=tuple(a.filename for a in parsed.attachments),
        attachment_types=tuple(a.content_type for a in parsed.attachments),
        priority=cls.priority,
    )


def _finish(message: Message, trace: list[str], ticket: Ticket | None) -> IngestResult:
    message.trace = trace
    return IngestResult(message.outcome, message, ticket, trace)


# --- deciding again --------------------------------------------------------------------------------


def refresh_on_ticket(stored: RawMessage, ctx: IngestContext) -> IngestResult:
    """Re-processing mail that is already on a ticket: derive its parsed form and cut body
    again from the raw bytes, and leave it where it is (no second ticket)."""
    message = db.session.scalar(select(Message).where(Message.raw_message_id == stored.id))
    parsed = parse_email(stored.raw)
    _fill_message(message, parsed, classify(parsed), fingerprints(stored.raw, parsed))
    cut(message, parsed, ctx, message.ticket.client_id)
    message.attachments.clear()
    store_attachments(message, parsed)
    trace = [*(message.trace or []), f"re-processed: read again from the stored bytes, kept on {message.ticket.reference}"]
    result = _finish(message, trace, message.ticket)
    stored.state = "decided"
    stored.last_error = None
    db.session.flush()
    return result


def place(stored: RawMessage, ctx: IngestContext, note: str, *, client_id: int | None = None,
          ticket: Ticket | None = None) -> IngestResult:
    """A person places mail the pipeline left unprocessed: on a new ticket for `client_id`, made
    like routed mail is (mailbox defaults, acknowledgement), or onto `ticket` as if it had
    threaded there (status rules included). `note` goes into the trace after the earlier lines."""
    item = prepare(ctx.reading, stored)
    ctx.preload([item])
    if item.parsed is None:
        raise ValueError("the email was kept without its content (over the size limit)")
    with db.session.no_autoflush:
        message = _message_for(stored, ctx)
        trace = [*(message.trace or []), note]
        _fill_message(message, item.parsed, item.cls, item.fps)
        if ticket is not None:
            placed = apply_to_ticket(ticket, "placed by hand", message, item, False, ctx, trace)
        else:
            placed = create_ticket(client_id, message, item, ctx, None, trace)
        result = _finish(message, trace, placed)
    ctx.known.remember(message, item.fps, placed)
    ctx.writer.mark_decided(stored)
    return result

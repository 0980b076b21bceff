"""The inbound pipeline, DESIGN steps 3–9, for stored raw messages.

A batch is decided in three steps: every message is parsed (pure Python), the lookups the
whole batch needs are made in a few queries, then each message is decided in memory against
them, and what the batch decided is remembered as it goes, so a reply finds a ticket created
earlier in the same batch. Every decision is written to the message's trace in plain words.
Flush, never commit: the caller (portal.services.fetching) commits per batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, time, timezone

from sqlalchemy import select, union_all, update
from sqlalchemy.orm import selectinload

from portal import tenancy
from portal.extensions import db
from portal.mail.classify import Classification, classify
from portal.mail.compose import LOOP_HEADER
from portal.mail.cut import cut_body
from portal.mail.fingerprint import Fingerprints, fingerprints
from portal.mail.parse import ParsedEmail, parse_email
from portal.mail.refs import REPLY_MARKER, RefFormat
from portal.mail.route import MailFacts, RouteChoice, RouteRule, choose_by_default_order, choose_route, sender_matches, strip_plus
from portal.mail.rules import APPEND, NEW_IN_MAILBOX_CLIENT, NEW_LINKED, StatusAction, action_for
from portal.mail.sanitize import sanitize_html
from portal.models import AllowEntry, Attachment, Client, Contact, Mailbox, Message, RawMessage, Ticket, TicketLink
from portal.models.base import utcnow
from portal.outbound.outbox import notify_contact, queue_mail
from portal.services.batch_rows import insert_new_rows
from portal.services.clients import tree_clients
from portal.services.lookups import chunks, one_of

# Envelope headers that may carry the plus address when To/Cc do not (BCC, forwarding).
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to")
_FP_KINDS = (("raw", "the same raw message"), ("content", "the same content"), ("envelope", "the same envelope"))


@dataclass
class IngestResult:
    outcome: str
    message: Message
    ticket: Ticket | None = None
    trace: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """A stored message read once: parsed, classified, fingerprinted, references found."""

    raw: RawMessage | None
    parsed: ParsedEmail | None = None
    cls: Classification | None = None
    fps: Fingerprints | None = None
    sender: str = ""
    thread_ids: list[str] = field(default_factory=list)
    plus_refs: list[str] = field(default_factory=list)
    token_refs: list[str] = field(default_factory=list)
    subject_refs: list[str] = field(default_factory=list)
    body_refs: list[str] = field(default_factory=list)
    # (waterline, (text, html)): the body cut ahead for the likely client's waterline.
    cut: tuple[str | None, tuple[str, str | None]] | None = None


@dataclass
class KnownMessage:
    ticket: Ticket
    direction: str
    automatic: bool


class IngestContext:
    """What the messages of one mailbox need: configuration loaded once, lookups made once
    per batch (preload), and what the batch has decided so far (remember)."""

    def __init__(self, mailbox: Mailbox, secret: bytes, host: str | None = None):
        self.mailbox = mailbox
        self.secret = secret
        self.host = host  # ours in the X-Tidemark-Loop header
        clients = tree_clients(mailbox.msp_id)
        self.clients = {c.id: c for c in clients}
        self.msp = self.clients[mailbox.msp_id]
        self.ref_format = RefFormat(prefix=self.msp.reference_prefix or "T")
        # Read here, not through the rows: examine() runs in a thread and must not load.
        self.plus_addressing = mailbox.plus_addressing
        self.mailbox_client_id = mailbox.client_id
        self._waterlines = {cid: self._effective_waterline(cid) for cid in self.clients}
        self.addresses = {a.lower() for a in mailbox.addresses}
        self.rules = [
            RouteRule(r.id, r.name, r.client_id, tuple(r.recipients), tuple(r.senders), tuple(r.subject_keywords),
                      tuple(r.attachment_types), r.high_importance_only, r.fallback, r.enabled)
            for r in mailbox.routes
        ]
        self.routes_by_id = {r.id: r for r in mailbox.routes}
        subtree = {mailbox.client_id} | tenancy.descendant_ids(clients, mailbox.client_id)
        self.allowed_addresses: dict[str, int] = {}
        self.allowed_domains: dict[str, int] = {}
        for entry in db.session.scalars(select(AllowEntry).where(AllowEntry.msp_id == mailbox.msp_id)):
            if entry.client_id in subtree:
                target = self.allowed_addresses if entry.kind == "address" else self.allowed_domains
                target[entry.value] = entry.client_id
        self._reset_batch()

    def _reset_batch(self) -> None:
        self.own_ids: set[str] = set()
        self.first_by_fp: dict[tuple[str, str], int | Message] = {}
        self.by_message_id: dict[str, KnownMessage] = {}
        self.tickets_by_ref: dict[str, Ticket] = {}
        self.contacts: dict[str, Contact] = {}
        self.existing: dict[int, Message] = {}
        self._number: int | None = None
        self._number_saved: int | None = None
        # Raw messages decided by the batch path; None: each is marked on its own row.
        self._decided: list[int] | None = None

    # --- configuration -----------------------------------------------------------------------

    def disabled(self, client_id: int) -> bool:
        return tenancy.disabled_by(tenancy.lineage_in(client_id, self.clients)) is not None

    def waterline(self, client_id: int) -> str | None:
        return self._waterlines.get(client_id)

    def _effective_waterline(self, client_id: int) -> str | None:
        return tenancy.inherited(tenancy.lineage_in(client_id, self.clients), "waterline")

    def likely_client(self, sender: str) -> int:
        """The client a sender's mail most often lands with (allow-list, else the mailbox's):
        the body is cut ahead for its waterline, and again only if the decision differs."""
        found = tenancy.allow_list_match(sender, self.allowed_addresses, self.allowed_domains)
        return found[0] if found is not None else self.mailbox_client_id

    def visible_body(self, parsed: ParsedEmail, waterline: str | None) -> tuple[str, str | None]:
        """(text, sanitised HTML) the sender newly wrote, cut at the waterline or our marker."""
        waterlines = [w for w in (waterline, REPLY_MARKER) if w]
        visible = cut_body(parsed.text, parsed.html, waterlines=waterlines, marker=REPLY_MARKER)
        return visible.text, sanitize_html(visible.html) if visible.html is not None else None

    def client_allows(self, client_id: int, sender: str) -> bool:
        return any(claimant == client_id
                   for claimant, _ in tenancy.allow_list_claims(sender, self.allowed_addresses, self.allowed_domains))

    # --- one batch -----------------------------------------------------------------------------

    def prepare(self, raw: RawMessage) -> Prepared:
        item = self.examine(raw.raw)
        item.raw = raw
        return item

    def examine(self, data: bytes | None) -> Prepared:
        """Everything about one message that needs no database: pure, so a batch can be read
        in a thread while the previous batch waits on its writes."""
        item = Prepared(None)
        if data is None:
            return item
        parsed = item.parsed = parse_email(data)
        item.cls = classify(parsed)
        item.fps = fingerprints(data, parsed)
        item.sender = (parsed.from_.address if parsed.from_ else "").lower()
        item.thread_ids = [m for m in [parsed.in_reply_to, *reversed(parsed.references),
                                       item.cls.bounce_original_message_id] if m][:100]
        fmt = self.ref_format
        if self.plus_addressing in ("mixed", "only"):
            recipients = [a.address for a in (*parsed.to, *parsed.cc, *parsed.bcc)]
            recipients += [v for k, v in parsed.headers if k.lower() in _ENVELOPE_HEADERS]
            item.plus_refs = fmt.refs_in_recipients(recipients, self.secret)
        item.token_refs = fmt.refs_in_tokens(parsed.text, self.secret) or fmt.refs_in_tokens(parsed.html or "", self.secret)
        item.subject_refs = fmt.refs_in_subject(parsed.subject)
        item.body_refs = fmt.refs_in_body(parsed.text)
        waterline = self.waterline(self.likely_client(item.sender))
        item.cut = (waterline, self.visible_body(parsed, waterline))
        return item

    def preload(self, items: list[Prepared]) -> None:
        """Every lookup the batch needs, in a handful of queries instead of several per message."""
        self._reset_batch()
        msp_id, mailbox_id = self.mailbox.msp_id, self.mailbox.id
        raw_ids = [i.raw.id for i in items if i.raw.id is not None]
        for condition in one_of(Message.raw_message_id, raw_ids):
            for m in db.session.scalars(select(Message).where(condition)):
                self.existing[m.raw_message_id] = m
        parsed = [i for i in items if i.parsed is not None]
        mids = sorted({i.parsed.message_id for i in parsed if i.parsed.message_id})
        for condition in one_of(Message.message_id, mids):
            self.own_ids.update(db.session.scalars(select(Message.message_id).where(
                Message.msp_id == msp_id, Message.direction == "out", condition)))
        self._preload_first_copies(parsed, mailbox_id, raw_ids)
        wanted = sorted({m for i in parsed for m in i.thread_ids})
        rows = []
        for condition in one_of(Message.message_id, wanted):
            rows += db.session.execute(
                select(Message.message_id, Message.ticket_id, Message.direction, Message.details, Message.id)
                .where(Message.msp_id == msp_id, condition, Message.ticket_id.is_not(None))
                .order_by(Message.id)).all()
        refs = sorted({r for i in parsed for r in (*i.plus_refs, *i.token_refs, *i.subject_refs, *i.body_refs)})
        ticket_ids = sorted({r.ticket_id for r in rows})
        tickets: dict[int, Ticket] = {}
        query = select(Ticket).options(selectinload(Ticket.contact)).where(Ticket.msp_id == msp_id)
        for condition in one_of(Ticket.id, ticket_ids):
            for t in db.session.scalars(query.where(condition)):
                tickets[t.id] = t
        for condition in one_of(Ticket.reference, refs):
            for t in db.session.scalars(query.where(condition)):
                tickets[t.id] = t
                self.tickets_by_ref[t.reference] = t
        for r in rows:
            if r.message_id not in self.by_message_id and r.ticket_id in tickets:
                self.by_message_id[r.message_id] = KnownMessage(
                    tickets[r.ticket_id], r.direction, bool((r.details or {}).get("automatic")))
        senders = sorted({i.sender for i in parsed if i.sender})
        for condition in one_of(Contact.email, senders):
            for c in db.session.scalars(select(Contact).where(Contact.msp_id == msp_id, condition)):
                self.contacts[c.email] = c

    def _preload_first_copies(self, parsed: list[Prepared], mailbox_id: int, raw_ids: list[int]) -> None:
        """The oldest earlier copy of each fingerprint the batch carries: the three kinds in one
        round trip, each part on its own index (an OR of the three would let SQLite fall back
        to reading every message of the mailbox)."""
        columns = {"raw": Message.fp_raw, "content": Message.fp_content, "envelope": Message.fp_envelope}
        wanted = {kind: {getattr(i.fps, kind) for i in parsed} for kind in columns}
        parts = []
        for kind, column in columns.items():
            for condition in one_of(column, sorted(wanted[kind])):
                part = select(Message.id, *columns.values()).where(
                    Message.mailbox_id == mailbox_id, Message.direction == "in", condition)
                if self.existing:  # re-processing: a message must not be its own first copy
                    part = part.where(Message.raw_message_id.is_(None) | Message.raw_message_id.not_in(raw_ids))
                parts.append(part)
        if not parts:
            return
        for mid, *values in db.session.execute(union_all(*parts)):
            for kind, value in zip(columns, values):
                key = (kind, value)
                if value in wanted[kind] and (key not in self.first_by_fp or mid < self.first_by_fp[key]):
                    self.first_by_fp[key] = mid

    def first_copy(self, fps: Fingerprints) -> tuple[int | Message, str] | None:
        found = [(self.first_by_fp[(kind, getattr(fps, kind))], why) for kind, why in _FP_KINDS
                 if (kind, getattr(fps, kind)) in self.first_by_fp]
        if not found:
            return None
        # The oldest copy: rows from the database (ids) before messages of this batch.
        return min(found, key=lambda f: (0, f[0]) if isinstance(f[0], int) else (1, 0))

    def remember(self, message: Message, fps: Fingerprints | None, ticket: Ticket | None) -> None:
        if fps is not None:
            for kind, _why in _FP_KINDS:
                self.first_by_fp.setdefault((kind, getattr(fps, kind)), message)
        if ticket is not None and message.message_id and message.message_id not in self.by_message_id:
            self.by_message_id[message.message_id] = KnownMessage(ticket, "in", False)

    def ticket_by_ref(self, ref: str) -> Ticket | None:
        if ref not in self.tickets_by_ref:
            self.tickets_by_ref[ref] = db.session.scalar(
                select(Ticket).where(Ticket.msp_id == self.mailbox.msp_id, Ticket.reference == ref))
        return self.tickets_by_ref[ref]

    def next_reference(self) -> tuple[int, str]:
        """Ticket numbers come from the MSP's counter, locked for the rest of the transaction
        by an UPDATE on first use, then counted here and written back by save_counter()."""
        if self._number is None:
            self._number = db.session.execute(
                update(Client).where(Client.id == self.mailbox.msp_id)
                .values(last_ticket_number=Client.last_ticket_number)
                .returning(Client.last_ticket_number)
            ).scalar_one()
        self._number += 1
        return self._number, self.ref_format.ref(self._number)

    def save_counter(self) -> None:
        if self._number is not None and self._number != self._number_saved:
            db.session.execute(update(Client).where(Client.id == self.mailbox.msp_id)
                               .values(last_ticket_number=self._number))
            self._number_saved = self._number

    def forget_batch(self) -> None:
        """After a rollback nothing the batch remembered is true any more."""
        self._reset_batch()

    def begin_batch(self) -> None:
        """From here until write_batch(), decided raw messages are marked in one UPDATE."""
        self._decided = []

    def mark_decided(self, raw: RawMessage) -> None:
        if self._decided is not None and raw.id is not None:
            self._decided.append(raw.id)
        else:
            raw.state = "decided"
            raw.last_error = None

    def write_batch(self) -> None:
        """Write what the batch decided: one UPDATE for the raw messages, then every new row
        with its primary key already given, so that the flush inserts each table with plain
        executemany (no RETURNING, which on SQLite means one statement per row)."""
        decided, self._decided = self._decided or [], None
        session = db.session
        with session.no_autoflush:
            # First, so that on SQLite this transaction holds the write lock before any
            # max(id) is read below: no other writer can take those ids meanwhile.
            # IN rather than one_of(): the session can evaluate IN to update the loaded raws.
            for chunk in chunks(decided):
                # Only rows still new: a raw message is decided once, and a batch that finds
                # one decided by someone else is rolled back rather than deciding it again.
                done = session.execute(update(RawMessage).where(RawMessage.id.in_(chunk), RawMessage.state == "new")
                                       .values(state="decided", last_error=None)
                                       .execution_options(synchronize_session="evaluate"))
                if done.rowcount != len(chunk):
                    raise AlreadyDecided(f"{len(chunk) - done.rowcount} of these messages were decided meanwhile")
            if decided:
                insert_new_rows(session)
        session.flush()  # what is left: changes to rows that were there already


class AlreadyDecided(RuntimeError):
    """Another run decided some of the batch's messages first."""


# --- the pipeline --------------------------------------------------------------------------------


def ingest(raw: RawMessage, ctx: IngestContext, item: Prepared | None = None) -> IngestResult:
    """Decide one stored message. Without `item`, it is prepared and its lookups made here."""
    if item is None:
        item = ctx.prepare(raw)
        ctx.preload([item])
    with db.session.no_autoflush:
        result = _decide(item, ctx)
    ctx.remember(result.message, item.fps, result.ticket)
    ctx.mark_decided(raw)
    return result


def _decide(item: Prepared, ctx: IngestContext) -> IngestResult:
    mailbox, raw = ctx.mailbox, item.raw
    trace: list[str] = []
    message = _message_for(raw, ctx)
    if item.parsed is None:
        message.outcome = "unprocessed"
        trace.append(f"kept without processing: {raw.size:,} bytes is over the size limit")
        return _finish(message, trace, None)
    parsed, cls, sender = item.parsed, item.cls, item.sender
    _fill_message(message, parsed, cls, item.fps)
    if parsed.defects:
        trace.append("parse: " + "; ".join(parsed.defects[:5]) + (" …" if len(parsed.defects) > 5 else ""))

    # 3. our own mail
    if parsed.message_id and parsed.message_id in ctx.own_ids:
        message.outcome = "own"
        trace.append(f"own mail: we sent {parsed.message_id}; recorded, not processed again")
        return _finish(message, trace, None)
    if ctx.host and (parsed.header(LOOP_HEADER) or "").strip().lower() == ctx.host.lower():
        message.outcome = "own"
        trace.append(f"own mail: it carries our {LOOP_HEADER} header; recorded, not processed again")
        return _finish(message, trace, None)

    # 4. duplicate within this mailbox
    first = ctx.first_copy(item.fps)
    if first is not None:
        copy, why = first
        message.outcome = "duplicate"
        if isinstance(copy, Message):
            message.duplicate_of = copy.duplicate_of or copy
            shown = "an earlier message of this batch"
        else:
            message.duplicate_of_id = copy
            shown = f"message {copy}"
        trace.append(f"duplicate of {shown} ({why}); creates nothing")
        return _finish(message, trace, None)

    # 5. classify
    if cls.auto_generated:
        trace.append(f"auto-generated: {cls.auto_reason}")
    if cls.bounce:
        trace.append("bounce for " + (", ".join(cls.bounced_recipients) or "unknown recipients"))
    if cls.priority != "normal":
        trace.append(f"priority {cls.priority}")
    ignored = _ignore_reason(mailbox, sender, parsed.subject)
    if ignored is None and mailbox.sync_start_date and parsed.date:
        if parsed.date < datetime.combine(mailbox.sync_start_date, time.min, tzinfo=timezone.utc):
            ignored = f"dated {parsed.date.date()}, before the sync start date {mailbox.sync_start_date}"
    if ignored:
        message.outcome = "ignored"
        message.body_html = parsed.html_safe
        trace.append(f"ignored: {ignored}")
        return _finish(message, trace, None)

    # 6–7. thread, and apply the status rules
    matched, how, quiet = _thread(item, ctx, trace)
    if matched is not None:
        ticket = _apply_to_ticket(matched, how, message, item, quiet, ctx, trace)
        if ticket is not None:
            return _finish(message, trace, ticket)

    # 8. route new mail
    facts = _facts(parsed, cls, sender)
    if ctx.rules:
        choice = choose_route(ctx.rules, facts, mailbox.address, mailbox.aliases)
    else:
        contact = ctx.contacts.get(sender)
        choice = choose_by_default_order(
            facts, mailbox.address, mailbox.aliases, allowed_addresses=ctx.allowed_addresses,
            allowed_domains=ctx.allowed_domains, contact_client=contact.client_id if contact else None,
            mailbox_client=mailbox.client_id)
    trace.extend(choice.trace)
    if choice.client_id is None:
        message.outcome = "unprocessed"
        message.body_html = parsed.html_safe
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
    ticket = _create_ticket(client_id, message, item, ctx, choice, trace)
    return _finish(message, trace, ticket)


# --- steps -----------------------------------------------------------------------------------------


def _message_for(raw: RawMessage, ctx: IngestContext) -> Message:
    message = ctx.existing.get(raw.id) if raw.id is not None else None
    if message is None:
        message = Message(msp_id=ctx.mailbox.msp_id, mailbox_id=ctx.mailbox.id, raw_message=raw, direction="in")
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


def _ignore_reason(mailbox: Mailbox, sender: str, subject: str) -> str | None:
    for pattern in mailbox.ignore_senders:
        if pattern and sender and sender_matches(pattern, sender):
            return f"sender {sender} matches the ignore list entry {pattern!r}"
    lowered = (subject or "").lower()
    for keyword in mailbox.ignore_subjects:
        if keyword and keyword.lower() in lowered:
            return f"subject contains the ignored keyword {keyword!r}"
    return None


def _sender_may_write(ticket: Ticket, sender: str, ctx: IngestContext) -> bool:
    if ticket.contact is not None and ticket.contact.email == sender:
        return True
    if sender in (c.lower() for c in ticket.cc):
        return True
    return ctx.client_allows(ticket.client_id, sender)


def _thread(item: Prepared, ctx: IngestContext, trace: list[str]):
    """(ticket, how, quiet) for the first rule that matches, else (None, None, False)."""
    parsed, cls = item.parsed, item.cls
    if ctx.mailbox.plus_addressing in ("mixed", "only"):
        for ref in item.plus_refs:
            ticket = ctx.ticket_by_ref(ref)
            if ticket is not None:
                return ticket, f"plus address tag {ref}", False
        if ctx.mailbox.plus_addressing == "only":
            trace.append("thread: plus-addressing only, no signed tag: new conversation")
            return None, None, False

    for mid in item.thread_ids:
        known = ctx.by_message_id.get(mid)
        if known is not None:
            quiet = cls.auto_generated and known.direction == "out" and known.automatic
            header = "In-Reply-To" if mid == parsed.in_reply_to else (
                "References" if mid in parsed.references else "bounced message")
            return known.ticket, f"{header} matched {mid}", quiet

    for ref in item.token_refs:
        ticket = ctx.ticket_by_ref(ref)
        if ticket is not None:
            return ticket, f"reference token {ref}", False

    for source, refs in (("subject", item.subject_refs), ("body", item.body_refs)):
        for ref in refs:
            ticket = ctx.ticket_by_ref(ref)
            if ticket is None:
                continue
            if _sender_may_write(ticket, item.sender, ctx):
                return ticket, f"{source} reference {ref}", False
            trace.append(f"thread: {source} reference {ref} ignored: {item.sender or 'the sender'} is not allowed "
                         f"to write into it (not its contact, CC or on its client's allow-list)")
    return None, None, False


def _apply_to_ticket(matched: Ticket, how: str, message: Message, item: Prepared, quiet: bool,
                     ctx: IngestContext, trace: list[str]) -> Ticket | None:
    """Step 7. Returns the ticket the message went onto."""
    seen = set()
    while matched.status == "merged" and matched.merged_into_id and matched.id not in seen:
        seen.add(matched.id)
        trace.append(f"thread: {matched.reference} was merged into another ticket")
        matched = db.session.get(Ticket, matched.merged_into_id)
    if matched.mailbox_id != ctx.mailbox.id:
        trace.append(f"thread: {how} on {matched.reference}, a ticket of another mailbox: "
                     "new ticket here, linked to it")
        client_id = matched.client_id if not ctx.disabled(matched.client_id) else ctx.mailbox.client_id
        ticket = _create_ticket(client_id, message, item, ctx, None, trace)
        db.session.add(TicketLink(ticket=ticket, linked=matched, kind="other-mailbox"))
        return ticket
    if matched.status == "split":
        children = list(db.session.scalars(select(Ticket).where(Ticket.split_from_id == matched.id)))
        trace.append(f"thread: {how} on {matched.reference}, which was split: onto "
                     + ", ".join(c.reference for c in children))
        first = None
        for child in children:
            copy = message if first is None else _copy_message(message)
            _append(child, copy, action_for(child.status, client_disabled=False, quiet=quiet), ctx, item, trace)
            first = first or child
        return first
    action = action_for(matched.status, client_disabled=ctx.disabled(matched.client_id), quiet=quiet)
    trace.append(f"thread: {how} on {matched.reference}")
    if action.kind == APPEND:
        _append(matched, message, action, ctx, item, trace)
        return matched
    trace.append(action.reason)
    client_id = ctx.mailbox.client_id if action.kind == NEW_IN_MAILBOX_CLIENT else matched.client_id
    ticket = _create_ticket(client_id, message, item, ctx, None, trace,
                            copy_from=matched if action.kind == NEW_LINKED else None)
    if action.kind == NEW_LINKED:
        db.session.add(TicketLink(ticket=ticket, linked=matched, kind="follow-up"))
    return ticket


def _append(ticket: Ticket, message: Message, action: StatusAction, ctx: IngestContext, item: Prepared,
            trace: list[str]) -> None:
    parsed = item.parsed
    message.ticket = ticket
    message.outcome = action.outcome
    _cut(message, parsed, ctx, ticket.client_id, item)
    if action.new_status and action.new_status != ticket.status:
        trace.append(f"status {ticket.status} → {action.new_status}" + (" (reopened)" if action.outcome == "reopened" else ""))
        ticket.status = action.new_status
        if action.outcome == "reopened" and not item.cls.auto_generated \
                and notify_contact("reopened", ticket, by_person=False, answering=message):
            trace.append("the customer hears that the ticket is reopened")
    elif action.reason:
        trace.append(action.reason)
    if action.flag_new_information:
        ticket.new_information = True
    contact_email = ticket.contact.email if ticket.contact else None
    for addr in [a.address.lower() for a in (*parsed.to, *parsed.cc)]:
        if strip_plus(addr) not in ctx.addresses and addr != contact_email and addr not in ticket.cc:
            ticket.cc = [*ticket.cc, addr]
    ticket.updated_at = utcnow()
    _store_attachments(message, parsed)


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


def _cut(message: Message, parsed: ParsedEmail, ctx: IngestContext, client_id: int,
         item: Prepared | None = None) -> None:
    waterline = ctx.waterline(client_id)
    if item is not None and item.cut is not None and item.cut[0] == waterline:
        message.body_text, message.body_html = item.cut[1]
    else:
        message.body_text, message.body_html = ctx.visible_body(parsed, waterline)


def _contact(ctx: IngestContext, client_id: int, sender: str, name: str) -> Contact | None:
    if not sender:
        return None
    contact = ctx.contacts.get(sender)
    if contact is None:
        contact = Contact(msp_id=ctx.mailbox.msp_id, client_id=client_id, email=sender[:320], name=name[:200])
        db.session.add(contact)
        ctx.contacts[sender] = contact
    return contact


def _create_ticket(client_id: int, message: Message, item: Prepared, ctx: IngestContext, choice: RouteChoice | None,
                   trace: list[str], copy_from: Ticket | None = None) -> Ticket:
    mailbox, parsed, cls = ctx.mailbox, item.parsed, item.cls
    route = ctx.routes_by_id.get(choice.rule.id) if choice and choice.rule else None
    number, reference = ctx.next_reference()
    contact = _contact(ctx, client_id, item.sender, parsed.from_.name if parsed.from_ else "")
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
    ctx.tickets_by_ref[reference] = ticket
    message.ticket = ticket
    message.outcome = "created"
    _cut(message, parsed, ctx, client_id, item)
    _store_attachments(message, parsed)
    if mailbox.keep_raw_attachment and item.raw.raw is not None:
        raw = item.raw.raw
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
                       "alert": bool(mailbox.alert_recipients), "route_id": route.id if route else None}
    # Into the outbox with the ticket, in the same transaction: neither is lost without the other.
    thread = [*parsed.references, parsed.message_id] if parsed.message_id else list(parsed.references)
    if acknowledge and item.sender:
        queue_mail("ticket_created", msp_id=mailbox.msp_id, ticket=ticket, mailbox=mailbox, to=[item.sender],
                   cc=ticket.cc if route and route.acknowledge_cc else (), in_reply_to=parsed.message_id,
                   references=thread)
    if mailbox.alert_recipients:
        queue_mail("alert", msp_id=mailbox.msp_id, ticket=ticket, mailbox=mailbox, to=mailbox.alert_recipients)
    trace.append(f"created {reference} for {ctx.clients[client_id].name}"
                 + (f", contact {contact.email}" if contact else "") + f"; {why}")
    return ticket


def _store_attachments(message: Message, parsed: ParsedEmail) -> None:
    for a in parsed.attachments:
        message.attachments.append(Attachment(
            filename=(a.filename or "attachment")[:255], content_type=(a.content_type or "application/octet-stream")[:255],
            size=a.size, sha256=a.sha256, content_id=(a.content_id or None) and a.content_id[:255],
            inline=a.inline, data=a.data))


def _finish(message: Message, trace: list[str], ticket: Ticket | None) -> IngestResult:
    message.trace = trace
    return IngestResult(message.outcome, message, ticket, trace)


def refresh_on_ticket(raw: RawMessage, ctx: IngestContext) -> IngestResult:
    """Re-processing mail that is already on a ticket: derive its parsed form and cut body
    again from the raw bytes, and leave it where it is (no second ticket)."""
    message = db.session.scalar(select(Message).where(Message.raw_message_id == raw.id))
    parsed = parse_email(raw.raw)
    _fill_message(message, parsed, classify(parsed), fingerprints(raw.raw, parsed))
    _cut(message, parsed, ctx, message.ticket.client_id)
    message.attachments.clear()
    _store_attachments(message, parsed)
    trace = [*(message.trace or []), f"re-processed: read again from the stored bytes, kept on {message.ticket.reference}"]
    result = _finish(message, trace, message.ticket)
    raw.state = "decided"
    raw.last_error = None
    db.session.flush()
    return result


def place(raw: RawMessage, ctx: IngestContext, note: str, *, client_id: int | None = None,
          ticket: Ticket | None = None) -> IngestResult:
    """A person places mail the pipeline left unprocessed: on a new ticket for `client_id`, made
    like routed mail is (mailbox defaults, acknowledgement), or onto `ticket` as if it had
    threaded there (status rules included). `note` goes into the trace after the earlier lines."""
    item = ctx.prepare(raw)
    ctx.preload([item])
    if item.parsed is None:
        raise ValueError("the email was kept without its content (over the size limit)")
    with db.session.no_autoflush:
        message = _message_for(raw, ctx)
        trace = [*(message.trace or []), note]
        _fill_message(message, item.parsed, item.cls, item.fps)
        if ticket is not None:
            placed = _apply_to_ticket(ticket, "placed by hand", message, item, False, ctx, trace)
        else:
            placed = _create_ticket(client_id, message, item, ctx, None, trace)
        result = _finish(message, trace, placed)
    ctx.remember(message, item.fps, placed)
    ctx.mark_decided(raw)
    return result

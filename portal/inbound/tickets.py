"""DESIGN steps 6, 7, 9 and 10 for one message: which ticket it threads onto, what it does to
that ticket (the status rules), and the ticket it creates, with its acknowledgement and alert
queued in the same transaction. Called by portal.inbound.decide; flush, never commit.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.inbound.context import IngestContext
from portal.inbound.extract import apply_extraction
from portal.inbound.read import Prepared, visible_body
from portal.mail.parse import ParsedEmail
from portal.mail.route import RouteChoice, strip_plus, ticket_priority
from portal.mail.rules import APPEND, NEW_IN_MAILBOX_CLIENT, NEW_LINKED, StatusAction, action_for
from portal.models import Attachment, Contact, Message, Ticket, TicketLink
from portal.models.base import utcnow
from portal.services import sla
from portal.outbound.outbox import notify_contact, queue_mail
from portal.outbound.variants import variant_label


def _sender_may_write(ticket: Ticket, sender: str, ctx: IngestContext) -> bool:
    if ticket.contact is not None and ticket.contact.email == sender:
        return True
    if sender in (c.lower() for c in ticket.cc):
        return True
    return ctx.client_allows(ticket.client_id, sender)


def follow_merges(ticket: Ticket, trace: list[str] | None = None) -> Ticket:
    """The ticket that a merged ticket lives on as: its merge target, followed along a chain of
    merges within the MSP; a chain that loops or leaves the MSP stops where it would."""
    seen = {ticket.id}
    while ticket.status == "merged" and ticket.merged_into_id:
        target = db.session.get(Ticket, ticket.merged_into_id)
        if target is None or target.msp_id != ticket.msp_id or target.id in seen:
            if trace is not None:
                trace.append(f"thread: {ticket.reference} was merged, but its merges lead back to it or nowhere: "
                             "kept on it")
            return ticket
        if trace is not None:
            trace.append(f"thread: {ticket.reference} was merged into {target.reference}")
        seen.add(target.id)
        ticket = target
    return ticket


def plus_tagged(item: Prepared, ctx: IngestContext, trace: list[str]) -> list[tuple[Ticket, str]]:
    """Step 6.1: (ticket, tag) for every ticket the mail's correctly signed plus-address tags name,
    in the order of the tags, each ticket once (also when one tag names a ticket merged into
    another's). A tag that names nothing, or whose signature is wrong, is ignored with a line in
    the trace; so is a second tag for the same ticket."""
    if ctx.mailbox.plus_addressing not in ("mixed", "only"):
        return []
    for ref in item.forged_plus_refs:
        trace.append(f"thread: plus address tag {ref} ignored: its signature does not match (typed or forged)")
    found: list[tuple[Ticket, str]] = []
    survivors: dict[int, str] = {}  # id() of the ticket each tag's mail ends on → the tag
    for ref in item.plus_refs:
        ticket = ctx.known.ticket_by_ref(ref)
        if ticket is None:
            trace.append(f"thread: plus address tag {ref} ignored: no ticket {ref} in this MSP")
            continue
        survivor = id(follow_merges(ticket))
        if survivor in survivors:
            trace.append(f"thread: plus address tag {ref} ignored: the mail already goes where the tag "
                         f"{survivors[survivor]} takes it")
            continue
        survivors[survivor] = ref
        found.append((ticket, ref))
    return found


def onto_tagged(tagged: list[tuple[Ticket, str]], message: Message, item: Prepared, ctx: IngestContext,
                trace: list[str]) -> Ticket | None:
    """Step 7 for plus-tagged mail: onto every ticket a tag names (Enate shares such mail with each
    work item), the status rules applied to each; the message goes onto the first, a copy of it
    (the same raw mail) onto each other. Returns the ticket the message itself went onto."""
    first = None
    for ticket, ref in tagged:
        target = message if first is None else _copy_message(message)
        placed = apply_to_ticket(ticket, f"plus address tag {ref}", target, item, False, ctx, trace)
        if target is not message:
            target.trace = trace  # the copy's trace is the message's: one decision
            if placed is not None:
                trace.append(f"a copy of the message is on {placed.reference} too")
        first = first or placed
    return first


def thread(item: Prepared, ctx: IngestContext, trace: list[str]):
    """Steps 6.2–6.5 (plus-address tags are plus_tagged's): (ticket, how, quiet) for the first
    rule that matches, else (None, None, False)."""
    parsed, cls = item.parsed, item.cls
    if ctx.mailbox.plus_addressing == "only":
        trace.append("thread: plus-addressing only, no tag names a ticket: new conversation")
        return None, None, False

    for mid in item.thread_ids:
        known = ctx.known.by_message_id.get(mid)
        if known is not None:
            quiet = cls.auto_generated and known.direction == "out" and known.automatic
            header = "In-Reply-To" if mid == parsed.in_reply_to else (
                "References" if mid in parsed.references else "bounced message")
            return known.ticket, f"{header} matched {mid}", quiet

    for ref in item.token_refs:
        ticket = ctx.known.ticket_by_ref(ref)
        if ticket is not None:
            return ticket, f"reference token {ref}", False

    for source, refs in (("subject", item.subject_refs), ("body", item.body_refs)):
        for ref in refs:
            ticket = ctx.known.ticket_by_ref(ref)
            if ticket is None:
                continue
            if _sender_may_write(ticket, item.sender, ctx) or _sender_may_write(follow_merges(ticket), item.sender, ctx):
                return ticket, f"{source} reference {ref}", False
            trace.append(f"thread: {source} reference {ref} ignored: {item.sender or 'the sender'} is not allowed "
                         f"to write into it (not its contact, CC or on its client's allow-list)")
    return None, None, False


def apply_to_ticket(matched: Ticket, how: str, message: Message, item: Prepared, quiet: bool,
                    ctx: IngestContext, trace: list[str]) -> Ticket | None:
    """Step 7. Returns the ticket the message went onto."""
    matched = follow_merges(matched, trace)
    if matched.mailbox_id != ctx.mailbox.id:
        trace.append(f"thread: {how} on {matched.reference}, a ticket of another mailbox: "
                     "new ticket here, linked to it")
        client_id = matched.client_id if not ctx.disabled(matched.client_id) else ctx.mailbox.client_id
        ticket = create_ticket(client_id, message, item, ctx, None, trace)
        db.session.add(TicketLink(ticket=ticket, linked=matched, kind="other-mailbox"))
        return ticket
    children = list(db.session.scalars(select(Ticket).where(Ticket.split_from_id == matched.id))) \
        if matched.status == "split" else []
    if children:
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
    ticket = create_ticket(client_id, message, item, ctx, None, trace,
                            copy_from=matched if action.kind == NEW_LINKED else None)
    if action.kind == NEW_LINKED:
        db.session.add(TicketLink(ticket=ticket, linked=matched, kind="follow-up"))
    return ticket


def _append(ticket: Ticket, message: Message, action: StatusAction, ctx: IngestContext, item: Prepared,
            trace: list[str]) -> None:
    parsed = item.parsed
    message.ticket = ticket
    message.outcome = action.outcome
    cut(message, parsed, ctx, ticket.client_id, item)
    if action.new_status and action.new_status != ticket.status:
        trace.append(f"status {ticket.status} → {action.new_status}" + (" (reopened)" if action.outcome == "reopened" else ""))
        old, ticket.status = ticket.status, action.new_status
        sla.status_changed(ticket, old, ticket.status, sla.received_at(item.stored))
        if action.outcome == "reopened" and not item.cls.auto_generated \
                and notify_contact("reopened", ticket, by_person=False, answering=message):
            trace.append("the customer hears that the ticket is reopened")
    elif action.reason:
        trace.append(action.reason)
    if action.flag_new_information:
        ticket.new_information = True
    contact_email = ticket.contact.email if ticket.contact else None
    # One new list and a set: ten thousand recipients must not cost ten thousand copies of it.
    cc, known = list(ticket.cc), set(ticket.cc)
    for addr in [a.address.lower() for a in (*parsed.to, *parsed.cc)]:
        if strip_plus(addr) not in ctx.addresses and addr != contact_email and addr not in known:
            cc.append(addr)
            known.add(addr)
    if len(cc) != len(ticket.cc):
        ticket.cc = cc
    ticket.updated_at = utcnow()
    store_attachments(message, parsed)


def _copy_message(message: Message) -> Message:
    copy = Message(**{c.key: getattr(message, c.key) for c in Message.__table__.columns
                      if c.key not in ("id", "raw_message_id")})
    db.session.add(copy)
    return copy


def cut(message: Message, parsed: ParsedEmail, ctx: IngestContext, client_id: int,
        item: Prepared | None = None) -> None:
    """The body shown on the ticket: cut at the client's waterline (cut ahead when it was the
    likely client's)."""
    waterline = ctx.waterline(client_id)
    if item is not None and item.cut is not None and item.cut[0] == waterline:
        message.body_text, message.body_html = item.cut[1]
    else:
        message.body_text, message.body_html = visible_body(parsed, waterline)


def _contact(ctx: IngestContext, client_id: int, sender: str, name: str) -> Contact | None:
    if not sender:
        return None
    contact = ctx.known.contacts.get(sender)
    if contact is None:
        contact = Contact(msp_id=ctx.mailbox.msp_id, client_id=client_id, email=sender[:320], name=name[:200])
        db.session.add(contact)
        ctx.known.contacts[sender] = contact
    return contact


def create_ticket(client_id: int, message: Message, item: Prepared, ctx: IngestContext, choice: RouteChoice | None,
                  trace: list[str], copy_from: Ticket | None = None, no_acknowledgement: str | None = None) -> Ticket:
    """Steps 9–10: the ticket, its contact and attachments; acknowledgement and alert queued.
    `no_acknowledgement`: why none goes out whatever the mailbox and route say (alert mail)."""
    mailbox, parsed, cls = ctx.mailbox, item.parsed, item.cls
    route = ctx.routes_by_id.get(choice.rule.id) if choice and choice.rule else None
    number, reference = ctx.numbers.next_reference()
    contact = _contact(ctx, client_id, item.sender, parsed.from_.name if parsed.from_ else "")
    priority = ticket_priority(cls.priority, route.default_priority if route else None, mailbox.default_priority)
    ticket = Ticket(
        msp_id=mailbox.msp_id, number=number, reference=reference, mailbox_id=mailbox.id, client_id=client_id,
        contact=contact, subject=(parsed.subject or "(no subject)")[:998],
        status=(route.default_status if route else None) or mailbox.default_status,
        priority=priority, type=(route.default_type if route else None) or mailbox.default_type,
        source="email", new_information=True,
        cc=[a.address.lower() for a in parsed.cc if a.address and strip_plus(a.address.lower()) not in ctx.addresses],
    )
    if copy_from is not None:
        # The follow-up keeps everyone who was on the closed ticket, and whoever wrote now.
        ticket.contact = copy_from.contact or contact
        writer = {item.sender} if item.sender and ticket.contact and item.sender != ticket.contact.email else set()
        ticket.cc = sorted(set(copy_from.cc) | set(ticket.cc) | writer)
        trace.append(f"follow-up of {copy_from.reference}: its contact and CCs carried over")
    ticket.sla_policy_id = sla.policy_id_for(tenancy.lineage_in(client_id, ctx.clients), mailbox, route)
    db.session.add(ticket)
    ctx.known.tickets_by_ref[reference] = ticket
    message.ticket = ticket
    message.outcome = "created"
    cut(message, parsed, ctx, client_id, item)
    apply_extraction(ticket, route, message, item, ctx, trace)
    # The clocks start after the extraction rules, which may choose the policy and the priority, and
    # from when the customer's mail reached the server, not from when it was fetched.
    sla.ticket_created(ticket, ticket.sla_policy_id, sla.received_at(item.stored))
    store_attachments(message, parsed)
    if mailbox.keep_raw_attachment and item.stored.raw is not None:
        raw_bytes = item.stored.raw
        message.attachments.append(Attachment(filename="original.eml", content_type="message/rfc822",
                                              size=len(raw_bytes), sha256=hashlib.sha256(raw_bytes).hexdigest(),
                                              inline=False, data=raw_bytes))
    acknowledge = mailbox.acknowledge and (route.acknowledge if route else True)
    if no_acknowledgement:
        why, acknowledge = no_acknowledgement, False
    elif cls.auto_generated:
        why = "no acknowledgement: the mail is auto-generated"
        acknowledge = False
    elif not acknowledge:
        why = "no acknowledgement: " + ("the route says so" if route and not route.acknowledge else "the mailbox says so")
    else:
        why = "acknowledgement to the sender" + (" and CCs" if route and route.acknowledge_cc else "")
    # Which alternative of the acknowledgement: the route's choice, else the mailbox's, else the standard.
    variant = (route.acknowledgement_variant if route else None) or mailbox.acknowledgement_variant or ""
    if acknowledge:
        chosen_by = " (the route's choice)" if route and route.acknowledgement_variant else (
            " (the mailbox's choice)" if variant else "")
        why += f" with {variant_label(variant)}{chosen_by}"
    message.details = {**(message.details or {}), "acknowledge": acknowledge,
                       "acknowledgement_variant": variant if acknowledge else None,
                       "acknowledge_cc": bool(acknowledge and route and route.acknowledge_cc),
                       "alert": bool(mailbox.alert_recipients), "route_id": route.id if route else None}
    # Into the outbox with the ticket, in the same transaction: neither is lost without the other.
    thread = [*parsed.references, parsed.message_id] if parsed.message_id else list(parsed.references)
    if acknowledge and item.sender:
        queue_mail("ticket_created", msp_id=mailbox.msp_id, ticket=ticket, mailbox=mailbox, to=[item.sender],
                   cc=ticket.cc if route and route.acknowledge_cc else (), in_reply_to=parsed.message_id,
                   references=thread, details={"variant": variant} if variant else None)
    if mailbox.alert_recipients:
        queue_mail("alert", msp_id=mailbox.msp_id, ticket=ticket, mailbox=mailbox, to=mailbox.alert_recipients)
    trace.append(f"created {reference} for {ctx.clients[client_id].name}"
                 + (f", contact {contact.email}" if contact else "") + f"; {why}")
    return ticket


def store_attachments(message: Message, parsed: ParsedEmail) -> None:
    for a in parsed.attachments:
        message.attachments.append(Attachment(
            filename=(a.filename or "attachment")[:255], content_type=(a.content_type or "application/octet-stream")[:255],
            size=a.size, sha256=a.sha256, content_id=(a.content_id or None) and a.content_id[:255],
            inline=a.inline, data=a.data))

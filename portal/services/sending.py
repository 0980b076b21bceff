"""Outbound mail as an outbox: a mail to send is a queued outbound Message, written in the
same transaction as whatever caused it (a new ticket, a reply, a failing mailbox), so that
nothing is lost or sent twice. The sender job renders, composes and sends what is due, and
says on the message what happened: sent, retrying (with the server's words), failed, held
back by a loop limit, or blocked (staging). Flush, never commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.mail import threads
from portal.mail.compose import AUTOMATIC_BY_EVENT, FileAttachment, InlineImage, compose
from portal.mail.refs import REPLY_MARKER, RefFormat
from portal.mail.render import TemplateError, render
from portal.models import Client, Mailbox, MailboxAlert, Message, Ticket, User
from portal.models.base import utcnow
from portal.services import outbound
from portal.transport.reach import Reach
from portal.transport.smtp import SmtpError, SmtpSettings, send as smtp_send

# The sender job: one waiting at a time, and no trace of it once done (so it can be queued again).
SEND_JOB = "workers.outbound.send_due"
SEND_OPTIONS = {"job_id": "send-outbox", "unique": True, "result_ttl": 0, "failure_ttl": 300}
# Minutes to wait before each further try after a temporary failure.
BACKOFF_MINUTES = (1, 5, 15, 60, 240)


@dataclass(frozen=True)
class SendEnvironment:
    keys: str  # TIDEMARK_ENCRYPTION_KEY
    secret: bytes  # signs reference tokens and plus tags
    host: str  # the right-hand side of our Message-IDs and the loop header
    portal_url: str
    ca_file: str | None = None
    reach: Reach | None = None  # which addresses SMTP servers may resolve to; None: any


def send_environment(actor: User | None = None) -> SendEnvironment:
    """From the app's configuration (portal and workers alike). `actor`: who asks for a test
    send in a page; None (a job) is held to the address rule of several-MSP installations."""
    from flask import current_app  # noqa: PLC0415 - only the callers with an app use this

    from portal.services.mailboxes import server_reach  # noqa: PLC0415

    cfg = current_app.config
    return SendEnvironment(keys=cfg["TIDEMARK_ENCRYPTION_KEY"], secret=cfg["SECRET_KEY"].encode(),
                           host=cfg["TIDEMARK_MAIL_HOST"], portal_url=cfg["TIDEMARK_PORTAL_URL"],
                           ca_file=cfg["TIDEMARK_CA_FILE"], reach=server_reach(actor))


def _people(addresses: Sequence[str | dict]) -> list[dict]:
    out = []
    for a in addresses:
        if isinstance(a, dict):
            out.append({"name": a.get("name", ""), "address": a["address"]})
        elif a:
            out.append({"name": "", "address": a})
    return out


def queue_mail(event: str, *, msp_id: int, to: Sequence[str | dict], cc: Sequence[str | dict] = (),
               ticket: Ticket | None = None, mailbox: Mailbox | None = None, in_reply_to: str | None = None,
               references: Sequence[str] = (), author_id: int | None = None, body_text: str = "",
               body_html: str | None = None, details: dict | None = None) -> Message:
    """Put one mail in the outbox, and ask for the sender job after the commit (inline when jobs
    are synchronous: a command has sent the mail it caused before it returns). Nothing is
    rendered or sent here."""
    message = Message(
        msp_id=msp_id, mailbox_id=mailbox.id if mailbox else (ticket.mailbox_id if ticket else None), ticket=ticket,
        direction="out", delivery="queued", to=_people(to), cc=_people(cc), in_reply_to=in_reply_to,
        references=list(references)[-50:], author_id=author_id, body_text=body_text, body_html=body_html,
        details={"event": event, "automatic": AUTOMATIC_BY_EVENT.get(event) is not None, "attempts": 0,
                 **(details or {})},
    )
    db.session.add(message)
    ask_for_send()
    return message


def ask_for_send() -> None:
    """The one way to ask for the sender job: after the commit, one waiting at a time."""
    from portal.jobs import enqueue  # noqa: PLC0415

    enqueue(SEND_JOB, options=SEND_OPTIONS)


def conversation_thread(ticket: Ticket, conversation: str = threads.CUSTOMER, *,
                        answering: Message | None = None) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for mail we send on a ticket, on the customer's conversation
    or the staff's (portal.mail.threads): never one on the other. `answering`: inbound mail
    being decided, not written yet, that is the newest on the ticket."""
    rows = db.session.execute(
        select(Message.message_id, Message.direction, Message.details, Message.in_reply_to, Message.references)
        .where(Message.ticket_id == ticket.id, Message.message_id.is_not(None), Message.direction.in_(("in", "out")))
        .order_by(Message.id)).all()
    if answering is not None and answering.message_id and answering.message_id not in {r.message_id for r in rows}:
        rows.append(answering)
    mails = [threads.Mail(message_id=r.message_id, direction=r.direction, event=(r.details or {}).get("event"),
                          in_reply_to=r.in_reply_to, references=tuple(r.references or ())) for r in rows]
    return threads.thread_headers(mails, conversation)


def notify_contact(event: str, ticket: Ticket, *, by_person: bool = True,
                   answering: Message | None = None) -> Message | None:
    """A notification to the customer (the ticket's contact), threaded into their conversation,
    when the mail settings say the customer hears of this kind of change. by_person: a person's
    action caused it (not inbound mail), so it cannot be part of a loop. answering: the inbound
    mail that caused it, while it is being decided."""
    if event not in outbound.get_setting("customer_notifications"):
        return None
    if ticket.contact is None or not ticket.contact.email:
        return None
    return _queue_notification(event, ticket, [ticket.contact.email], {"by_person": by_person}, answering)


def _queue_notification(event: str, ticket: Ticket, to: list[str], details: dict,
                        answering: Message | None = None) -> Message:
    in_reply_to, references = conversation_thread(ticket, answering=answering)
    return queue_mail(event, msp_id=ticket.msp_id, ticket=ticket, to=to, in_reply_to=in_reply_to,
                      references=references, details=details)


def due_batches(now: datetime, size: int = 100) -> Iterator[list[Message]]:
    """Every outbound message that is ready to go, oldest first, a batch at a time. A retry whose
    time has not come is passed over, so that it never holds up the mail queued after it."""
    after = 0
    while True:
        rows = list(db.session.scalars(
            select(Message).where(Message.direction == "out", Message.delivery.in_(("queued", "retrying")),
                                  Message.id > after)
            .order_by(Message.id).limit(size)))
        if not rows:
            return
        after = rows[-1].id
        ready = [m for m in rows if not m.details.get("next_attempt")
                 or datetime.fromisoformat(m.details["next_attempt"]) <= now]
        if ready:
            yield ready


def _context(message: Message, env: SendEnvironment) -> dict:
    ticket = message.ticket
    latest = None
    if ticket is not None:
        # The message this mail is about: the newest before it, not the newest at sending time (a
        # later reply would be quoted). Automatic mail is about the customer's mail that caused it.
        query = select(Message).where(Message.ticket_id == ticket.id, Message.id < message.id)
        if message.details.get("automatic"):
            query = query.where(Message.direction == "in")
        else:
            query = query.where(Message.direction != "note")
        latest = db.session.scalar(query.order_by(Message.id.desc()).limit(1))
    client = ticket.client if ticket else (db.session.get(Mailbox, message.mailbox_id).client if message.mailbox_id else None)
    msp = db.session.get(Client, message.msp_id)
    context = {
        "msp": {"name": msp.name},
        "portal_url": env.portal_url,
        "reply_marker": REPLY_MARKER,
        "client": {"name": client.name if client else ""},
    }
    if ticket is not None:
        context["ticket"] = {"reference": ticket.reference, "subject": ticket.subject, "status": ticket.status,
                             "priority": ticket.priority, "url": f"{env.portal_url.rstrip('/')}/tickets/{ticket.reference}"}
        if ticket.contact:
            context["contact"] = {"name": ticket.contact.name, "email": ticket.contact.email}
        assignee = db.session.get(User, ticket.assignee_id) if ticket.assignee_id else None
        context["assignee"] = {"name": (assignee.name or assignee.email) if assignee else "",
                               "email": assignee.email if assignee else ""}
    source = message if message.details.get("event") == "reply" else latest
    if source is not None:
        context["message"] = {"text": source.body_text, "html": source.body_html,
                              "author": source.from_name or source.from_address,
                              "date": (source.sent_at or source.created_at).isoformat() if (source.sent_at or source.created_at) else ""}
    if message.mailbox_id:
        mailbox = db.session.get(Mailbox, message.mailbox_id)
        context["mailbox"] = {"address": mailbox.address, "last_error": mailbox.last_error or "",
                              "failure_count": mailbox.failure_count}
    return context


def _smtp_settings(mailbox: Mailbox | None, env: SendEnvironment) -> SmtpSettings | None:
    server = outbound.outgoing_server(mailbox)
    return outbound.smtp_settings(server, env) if server is not None else None


def _settle(message: Message, delivery: str, note: str) -> str:
    message.delivery = delivery
    message.delivery_note = note
    return delivery


def _files(message: Message) -> tuple[list[FileAttachment], list[InlineImage]]:
    """What a technician attached to the message: files, and the images its HTML shows as cid:."""
    files, images = [], []
    for a in message.attachments:
        if a.inline and a.content_id:
            images.append(InlineImage(cid=a.content_id, data=a.data, content_type=a.content_type, filename=a.filename))
        else:
            files.append(FileAttachment(filename=a.filename, data=a.data, content_type=a.content_type))
    return files, images


def deliver(message: Message, env: SendEnvironment, *, now: datetime | None = None,
            send: Callable = smtp_send, servers: dict | None = None) -> str:
    """Render, compose and send one outbound message; returns the delivery state it ends in.
    `servers` keeps each mailbox's outgoing server across the messages of one sending run."""
    now = now or utcnow()
    details = dict(message.details)
    event = details["event"]
    recipients = [p["address"] for p in (*message.to, *message.cc)]
    if not recipients:
        return _settle(message, "failed", "failed: nobody to send it to")
    # Checked first: mail that cannot go out costs no further lookups and no render.
    mailbox = db.session.get(Mailbox, message.mailbox_id) if message.mailbox_id else None
    servers = {} if servers is None else servers
    if message.mailbox_id not in servers:
        servers[message.mailbox_id] = _smtp_settings(mailbox, env)
    server = servers[message.mailbox_id]
    if server is None:
        return _settle(message, "failed", "failed: no outgoing server is configured (set smtp: in the configuration)")

    ticket = message.ticket
    msp = db.session.get(Client, message.msp_id)
    ref_format = RefFormat(prefix=msp.reference_prefix or "T")
    if details.get("automatic"):
        for address in recipients:
            reason = outbound.automatic_mail_hold(msp.id, address, ticket.subject if ticket else event, now, ref_format,
                                                  same_subject_rule=not details.get("by_person"))
            if reason:
                return _settle(message, "held", f"held back: {reason}")

    client = ticket.client if ticket else (mailbox.client if mailbox else msp)
    texts = outbound.template_in_effect(client, event)
    try:
        rendered = render((texts.text_source, texts.html_source), _context(message, env))
    except TemplateError as exc:
        where = f"the template of {texts.source.name}" if texts.source else "the built-in template"
        return _settle(message, "failed", f"failed: {where} for {event} has an error: {exc}")

    from_address = (mailbox.response_address or mailbox.address) if mailbox else server.from_address
    if not from_address:
        return _settle(message, "failed", "failed: no sender address (set the mailbox's response address or smtp.from)")
    override = outbound.get_setting("override_recipient")
    to, cc = message.to, message.cc
    if override:
        to, cc = [{"name": "", "address": override}], []
    files, images = _files(message)
    email = compose(
        rendered, from_address=from_address, from_name=msp.name, to=[p["address"] for p in to],
        cc=[p["address"] for p in cc], host=env.host, ticket_ref=ticket.reference if ticket else None,
        ticket_uuid=ticket.uuid if ticket else None, ref_format=ref_format, secret=env.secret,
        plus_mode=mailbox.plus_addressing if mailbox else "off", in_reply_to=message.in_reply_to,
        references=message.references, automatic=AUTOMATIC_BY_EVENT.get(event), date=now,
        message_id=message.message_id or None, attachments=files, inline_images=images,
    )
    # The Message-ID is ours from here on: replies thread on it, and a copy coming back is ours.
    message.message_id = email["Message-ID"]
    message.subject = str(email["Subject"])[:998]
    message.from_address = from_address
    if event != "reply":
        message.body_text = rendered.text
        message.body_html = rendered.html
    message.raw_out = email.as_bytes()
    if outbound.get_setting("block_outgoing"):
        return _settle(message, "blocked", "blocked: outgoing mail is switched off (staging); recorded, not sent")
    details["attempts"] = details.get("attempts", 0) + 1
    try:
        result = send(server, email)
    except SmtpError as exc:
        if exc.temporary and details["attempts"] < len(BACKOFF_MINUTES) + 1:
            wait = BACKOFF_MINUTES[details["attempts"] - 1]
            details["next_attempt"] = (now + timedelta(minutes=wait)).isoformat()
            message.details = details
            return _settle(message, "retrying", f"retrying in {wait} min (try {details['attempts']}): {exc.message}")
        message.details = details
        return _settle(message, "failed", f"failed: {exc.message}")
    message.details = details
    if details.get("automatic"):
        for address in recipients:
            outbound.log_automatic_mail(msp.id, address, ticket.subject if ticket else event, message.id, ref_format)
    note = "sent" + (f" (to {override} instead of {', '.join(recipients)}: recipients are overridden)" if override else "")
    if getattr(result, "refused", None):
        note += "; refused: " + "; ".join(str(r) for r in result.refused)
    if details.get("alert_id"):
        alert = db.session.get(MailboxAlert, details["alert_id"])
        if alert is not None:
            alert.sent_at = now
    return _settle(message, "sent", note)


def send_test_email(client: Client, event: str, text_source: str | None, html_source: str | None, recipient: str,
                    env: SendEnvironment, actor: User, *, send: Callable = smtp_send) -> str:
    """Render a template for the sample ticket and send it now through the default gateway
    (limited, staging switches honoured, audited: `test_mail`). Returns what happened in plain
    words; nothing is recorded on any ticket."""
    from portal.mail.render import sample_context  # noqa: PLC0415
    from portal.services.test_mail import send_test_mail  # noqa: PLC0415

    try:
        rendered = render((text_source, html_source), sample_context())
    except TemplateError as exc:
        return f"Not sent: the template has an error: {exc}"
    server = _smtp_settings(None, env)
    if server is None or not server.from_address:
        return "Not sent: set the default outgoing gateway and its from address first (smtp: in the configuration)."
    msp = db.session.get(Client, client.msp_id)

    def build(address: str):
        return compose(rendered, from_address=server.from_address, from_name=msp.name, to=[address], host=env.host,
                       automatic=AUTOMATIC_BY_EVENT.get(event), date=utcnow())

    return send_test_mail(actor, client.msp_id, ("client", client.id), recipient, build, server, server.host,
                          send=send)

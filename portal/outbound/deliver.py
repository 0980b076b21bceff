"""The sender's work on each message of the outbox: what is due, the loop guards on automatic
mail, then render, compose and send, and say on the message what happened: sent, retrying (with
the server's words), failed, held back by a loop limit, or blocked (staging). Flush, never commit:
the sending run (workers.sending) commits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import func, select

from portal import tenancy
from portal.extensions import db
from portal.mail.compose import AUTOMATIC_BY_EVENT, FileAttachment, InlineImage, compose
from portal.mail.refs import REPLY_MARKER, RefFormat, normalize_subject
from portal.mail.render import RenderedEmail, TemplateError
from portal.mail.rich import render_texts
from portal.models import AutoMailLog, Client, Mailbox, MailboxAlert, Message, User
from portal.models.base import utcnow
from portal.outbound.outbox import outbound_ids
from portal.outbound.servers import SendEnvironment, default_gateway, outgoing_settings
from portal.outbound.settings import get_setting
from portal.outbound.templates import template_in_effect
from portal.services.mailbox_alerts import template_details
from portal.services import sla
from portal.services.mailbox_oauth import forget_access_token
from portal.services.sla_alerts import template_values as sla_values
from portal.transport import graph
from portal.transport.base import TransportError
from portal.transport.smtp import SmtpSettings
from portal.transport.smtp import send as smtp_send

# Minutes to wait before each further try after a temporary failure.
BACKOFF_MINUTES = (1, 5, 15, 60, 240)


# --- loop guards -----------------------------------------------------------------------------------------


def subject_key(address: str, subject: str, ref_format: RefFormat | None = None) -> str:
    """The recipient's domain and the subject without our references and reply prefixes: an
    auto-responder that changes its address at every answer still lands on the same key,
    while two customers elsewhere with the same subject do not."""
    domain = address.lower().rpartition("@")[2]
    return f"{domain}|{normalize_subject(subject, ref_format)}"[:998]


def automatic_mail_hold(msp_id: int, address: str, subject: str, now: datetime | None = None,
                        ref_format: RefFormat | None = None, *, same_subject_rule: bool = True) -> str | None:
    """Why an automatic mail to `address` must be held back, or None. The same-subject rule
    ends loops with auto-responders; mail a person's action caused (a ticket closed) cannot loop."""
    now = now or utcnow()
    since = now - timedelta(hours=1)
    address = address.lower()
    limit = int(get_setting("auto_mail_limit_per_hour", msp_id))
    # This MSP's mail only: counted across MSPs, one MSP's portal made to answer forged mail from
    # an address could hold back another's acknowledgements to it.
    sent = db.session.scalar(select(func.count()).select_from(AutoMailLog).where(
        AutoMailLog.address == address, AutoMailLog.at >= since, AutoMailLog.msp_id == msp_id))
    if sent >= limit:
        return f"{address} already got {sent} automatic mails in the last hour (the limit is {limit})"
    if not same_subject_rule:
        return None
    key = subject_key(address, subject, ref_format)
    same = db.session.scalar(select(func.count()).select_from(AutoMailLog).where(
        AutoMailLog.msp_id == msp_id, AutoMailLog.subject_key == key, AutoMailLog.at >= since))
    if same:
        return f"an automatic mail with the same subject went out less than an hour ago ({subject!r})"
    return None


def log_automatic_mail(msp_id: int, address: str, subject: str, message_id: int | None,
                       ref_format: RefFormat | None = None) -> None:
    db.session.add(AutoMailLog(msp_id=msp_id, address=address.lower(),
                               subject_key=subject_key(address, subject, ref_format), message_id=message_id))


def _hold_reason(msp_id: int, recipients: list[str], subject: str, now: datetime, ref_format: RefFormat,
                 details: dict) -> str | None:
    """Why this automatic mail must be held back (the first recipient a loop guard stops), or None."""
    # Neither a person's action nor a mailbox alert (the portal's own finding: a failing mailbox,
    # an expiring sign-in) answers mail, so neither can loop; their subject is the bare event,
    # which would hold back a second mailbox's alert within the hour. Nor do SLA warnings (the
    # portal's own finding too), which share the ticket's subject with its new-ticket alert.
    same_subject_rule = not (details.get("by_person") or details.get("alert_id") or details.get("sla"))
    for address in recipients:
        reason = automatic_mail_hold(msp_id, address, subject, now, ref_format, same_subject_rule=same_subject_rule)
        if reason:
            return reason
    return None


# --- the outbox, message by message ---------------------------------------------------------------------


def due_batches(now: datetime, size: int = 100) -> Iterator[list[Message]]:
    """Every outbound message that is ready to go, oldest first, a batch at a time. A retry whose
    time has not come is passed over, so that it never holds up the mail queued after it."""
    after = 0
    while True:
        ids = outbound_ids(("queued", "retrying"), Message.id > after)[:size]
        if not ids:
            return
        after = ids[-1]
        rows = list(db.session.scalars(select(Message).where(Message.id.in_(ids)).order_by(Message.id)))
        ready = [m for m in rows if not m.details.get("next_attempt")
                 or datetime.fromisoformat(m.details["next_attempt"]) <= now]
        if ready:
            # Held while the batch is sent: the session keeps only what something refers to, so
            # each message would load its mailbox and MSP again, flushing the message before it
            # (measured: 17 s of one-row round trips for 6,675 acknowledgements).
            senders = _senders(ready)  # noqa: F841 - the reference is the point
            yield ready


def _senders(messages: list[Message]) -> list:
    mailbox_ids = {m.mailbox_id for m in messages if m.mailbox_id}
    msp_ids = {m.msp_id for m in messages}
    return [*db.session.scalars(select(Mailbox).where(Mailbox.id.in_(mailbox_ids))),
            *db.session.scalars(select(Client).where(Client.id.in_(msp_ids)))]


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
                             "priority": ticket.priority, "created": ticket.created_at,
                             "url": f"{env.portal_url.rstrip('/')}/tickets/{ticket.reference}"}
        if ticket.contact:
            context["contact"] = {"name": ticket.contact.name, "email": ticket.contact.email}
        assignee = db.session.get(User, ticket.assignee_id) if ticket.assignee_id else None
        context["assignee"] = {"name": (assignee.name or assignee.email) if assignee else "",
                               "email": assignee.email if assignee else ""}
        if message.details.get("event", "").startswith("sla_"):
            context["sla"] = sla_values(ticket, message.details)
    source = message if message.details.get("event") == "reply" else latest
    if source is not None:
        context["message"] = {"text": source.body_text, "html": source.body_html,
                              "author": source.from_name or source.from_address,
                              "signature": _signature(source, msp),
                              "date": source.sent_at or source.created_at}
    if message.mailbox_id:
        mailbox = db.session.get(Mailbox, message.mailbox_id)
        alert = db.session.get(MailboxAlert, message.details["alert_id"]) if message.details.get("alert_id") else None
        context["mailbox"] = {"address": mailbox.address, "last_error": mailbox.last_error or "",
                              "failure_count": mailbox.failure_count, **template_details(alert)}
    return context


def _signature(source: Message, msp: Client) -> str:
    """A reply's sign-off as the composer showed it; replies queued before the composer showed
    it get the one the reply template appended then (the author's name and the MSP's)."""
    if source.details.get("event") != "reply":
        return ""
    if "signature" in source.details:
        return source.details["signature"] or ""
    return "\n".join(p for p in (source.from_name or source.from_address, msp.name) if p)


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


# Mail about a mailbox's own trouble goes through the default gateway when there is one: the
# mailbox's own outgoing server may share the trouble (the same refused OAuth2 grant, the same host).
ABOUT_ITS_MAILBOX = frozenset({"mailbox_failing", "reconnect_needed", "sign_in_expiring"})


def _server(message: Message, mailbox: Mailbox | None, env: SendEnvironment,
            servers: dict | None) -> SmtpSettings | graph.GraphSettings | None:
    """How to reach the server this message goes through; `servers` keeps it per mailbox (None:
    its MSP's gateway) across the messages of one sending run, and so does a token request that failed
    (raised again as TransportError for the mailbox's other messages of the run)."""
    servers = {} if servers is None else servers
    if mailbox is not None and not mailbox.sends_itself:
        mailbox = None  # incoming only: the gateway sends its mail
    elif message.details.get("event") in ABOUT_ITS_MAILBOX and default_gateway(message.msp_id) is not None:
        mailbox = None
    # A mailbox's server, or the gateway of the message's MSP (its own, else the installation's).
    key = mailbox.id if mailbox is not None else ("gateway", message.msp_id)
    if key not in servers:
        try:
            servers[key] = outgoing_settings(mailbox, env, message.msp_id)
        except TransportError as exc:
            # Its token request failed: asked once a run, so that one MSP's sign-in service, down
            # or slow, does not hold up the single sender for every message queued behind it.
            servers[key] = exc
    found = servers[key]
    if isinstance(found, TransportError):
        raise found.with_traceback(None)
    return found


def _compose(message: Message, rendered: RenderedEmail, env: SendEnvironment, *, event: str, from_address: str,
             msp: Client, mailbox: Mailbox | None, ref_format: RefFormat, override: str | None, now: datetime):
    """The email to send, and on the message what it carries (recipients overridden on staging)."""
    ticket = message.ticket
    to, cc = message.to, message.cc
    if override:
        to, cc = [{"name": "", "address": override}], []
    files, images = _files(message)
    email = compose(
        rendered, from_address=from_address, from_name=msp.name, to=[p["address"] for p in to],
        cc=[p["address"] for p in cc], host=env.host, ticket_ref=ticket.reference if ticket else None,
        ticket_uuid=ticket.uuid if ticket else None, ref_format=ref_format, secret=env.secret,
        reply_to=mailbox.reply_to if mailbox else None,
        plus_mode=mailbox.plus_addressing if mailbox else "off", in_reply_to=message.in_reply_to,
        references=message.references, automatic=AUTOMATIC_BY_EVENT.get(event), date=now,
        message_id=message.message_id or None, attachments=files, inline_images=images,
        embed_images=bool(mailbox and mailbox.embed_images == "inline"),
    )
    # The Message-ID is ours from here on: replies thread on it, and a copy coming back is ours.
    message.message_id = email["Message-ID"]
    message.subject = str(email["Subject"])[:998]
    message.from_address = from_address
    if event != "reply":
        message.body_text = rendered.text
        message.body_html = rendered.html
    message.raw_out = email.as_bytes()
    return email


def _not_sent(message: Message, details: dict, exc: TransportError, now: datetime) -> str:
    """A server refused: try again later after a temporary error, while tries remain; else failed.
    Graph's throttling (Throttled) names the earliest time a new try makes sense."""
    if exc.transient and details["attempts"] < len(BACKOFF_MINUTES) + 1:
        wait = max(BACKOFF_MINUTES[details["attempts"] - 1], math.ceil(getattr(exc, "retry_after", 0) / 60))
        details["next_attempt"] = (now + timedelta(minutes=wait)).isoformat()
        message.details = details
        return _settle(message, "retrying", f"retrying in {wait} min (try {details['attempts']}): {exc.message}")
    message.details = details
    return _settle(message, "failed", f"failed: {exc.message}")


def _sent(message: Message, details: dict, recipients: list[str], override: str | None, result,
          now: datetime) -> str:
    note = "sent" + (f" (to {override} instead of {', '.join(recipients)}: recipients are overridden)" if override else "")
    if getattr(result, "refused", None):
        note += "; refused: " + "; ".join(str(r) for r in result.refused)
    accepted(message, now)
    return _settle(message, "sent", note)


def accepted(message: Message, now: datetime) -> None:
    """What a server's acceptance changes beside the message's own row: the loop guard's log of
    automatic mail, the alert's sent time, the ticket's first response. The sending run does it
    again when the commit after an acceptance failed (workers.sending)."""
    details, ticket = message.details, message.ticket
    if details.get("automatic"):
        msp = db.session.get(Client, message.msp_id)
        ref_format = RefFormat(prefix=msp.reference_prefix or "T")
        for address in (p["address"] for p in (*message.to, *message.cc)):
            log_automatic_mail(msp.id, address, ticket.subject if ticket else details["event"], message.id, ref_format)
    if details.get("alert_id"):
        alert = db.session.get(MailboxAlert, details["alert_id"])
        if alert is not None:
            alert.sent_at = now
    if details.get("event") == "reply" and ticket is not None:
        sla.replied(ticket, now)  # the first public reply by staff stops the response clock


# A message whose sending run stopped while a server was taking it: it may have arrived.
UNCERTAIN_NOTE = ("may have been sent: the sending run stopped while the server was taking it, so it is not sent "
                  "again by itself (nobody gets it twice); ask the recipient, or send it again")


FOUND_SENT_NOTE = ("sent: the sending run stopped while Microsoft Graph was taking it, and the mailbox's Sent Items "
                   "holds it")


def handed_over(message: Message) -> None:
    """The state a message is in while a server may be taking it ("sending"); a run that finds it
    so later knows the run before stopped right there (settle_interrupted)."""
    _settle(message, "sending", "being handed to the server")


def settle_interrupted(env: SendEnvironment | None = None, servers: dict | None = None,
                       now: datetime | None = None) -> list[Message]:
    """Mail a sending run was handing to its server when it stopped (killed, its machine gone).
    Graph keeps what sendMail took in the mailbox's Sent Items, so mail found there is sent. Whether
    an SMTP server took a message cannot be asked, and sending it again could send it twice: it is
    settled as "uncertain", for a person to see on its ticket and send again. Either way it counts
    as sent where sending counts (the loop guard, the first response). `env` and `servers` as for
    deliver; without `env`, nothing is looked up. Call only while the run's database lock is held:
    no other run is handing anything over then."""
    now = now or utcnow()
    found = list(db.session.scalars(select(Message).where(Message.direction == "out", Message.delivery == "sending")
                                    .order_by(Message.id)))
    for message in found:
        if env is not None and _in_sent_items(message, env, servers):
            _settle(message, "sent", FOUND_SENT_NOTE)
        else:
            _settle(message, "uncertain", UNCERTAIN_NOTE)
        accepted(message, now)
    return found


def _in_sent_items(message: Message, env: SendEnvironment, servers: dict | None) -> bool:
    """Whether the Graph mailbox it went through has it in Sent Items; False for SMTP, and when
    Graph cannot be asked now (the mail stays uncertain rather than wait for it)."""
    mailbox = db.session.get(Mailbox, message.mailbox_id) if message.mailbox_id else None
    try:
        server = _server(message, mailbox, env, servers)
        return (isinstance(server, graph.GraphSettings) and bool(message.message_id)
                and graph.in_sent_items(server, message.message_id))
    except TransportError:
        return False


def deliver(message: Message, env: SendEnvironment, *, now: datetime | None = None,
            send: Callable = smtp_send, servers: dict | None = None,
            handing_over: Callable[[Message], None] | None = None) -> str:
    """Render, compose and send one outbound message; returns the delivery state it ends in.
    `servers` keeps each mailbox's outgoing server across the messages of one sending run.
    `handing_over(message)` is called at the last moment before a server may take the message
    (see hand_over in portal.transport.smtp): the sending run records it there."""
    now = now or utcnow()
    details = dict(message.details)
    event = details["event"]
    recipients = [p["address"] for p in (*message.to, *message.cc)]
    if not recipients:
        return _settle(message, "failed", "failed: nobody to send it to")
    # Checked first: mail that cannot go out costs no further lookups and no render.
    mailbox = db.session.get(Mailbox, message.mailbox_id) if message.mailbox_id else None
    try:
        server = _server(message, mailbox, env, servers)
    except TransportError as exc:  # no access token: its mailbox's grant (Graph or the SMTP server's)
        details["attempts"] = details.get("attempts", 0) + 1
        return _not_sent(message, details, exc, now)
    if server is None:
        if mailbox is not None and not mailbox.sends_itself:
            return _settle(message, "failed", f"failed: {mailbox.address} is incoming only, so its mail goes through "
                                              "the default gateway, and there is none")
        return _settle(message, "failed", "failed: no outgoing server is configured (set smtp: in the configuration)")

    ticket = message.ticket
    msp = db.session.get(Client, message.msp_id)
    ref_format = RefFormat(prefix=msp.reference_prefix or "T")
    if details.get("automatic") and not details.get("sent_again_by"):
        reason = _hold_reason(msp.id, recipients, ticket.subject if ticket else event, now, ref_format, details)
        if reason:
            return _settle(message, "held", f"held back: {reason}")

    client = ticket.client if ticket else (mailbox.client if mailbox else msp)
    # An acknowledgement carries the alternative its route or mailbox chose when it was queued.
    texts = template_in_effect(client, event, details.get("variant") or "")
    try:
        rendered = render_texts(texts.texts, texts.layout, _context(message, env), tz=tenancy.timezone_of(client),
                                language=tenancy.language_of(client))
    except TemplateError as exc:
        where = f"the template of {texts.source.name}" if texts.source else "the built-in template"
        return _settle(message, "failed", f"failed: {where} for {event} has an error: {exc}")

    # A reply keeps the From its technician chose (a retry sends the same); the rest, the default.
    from_address = details.get("from_address") or (mailbox.from_addresses[0] if mailbox else server.from_address)
    if not from_address:
        return _settle(message, "failed", "failed: no sender address (set the mailbox's response address or smtp.from)")
    override = get_setting("override_recipient", msp.id)
    email = _compose(message, rendered, env, event=event, from_address=from_address, msp=msp, mailbox=mailbox,
                     ref_format=ref_format, override=override, now=now)
    if get_setting("block_outgoing", msp.id):
        return _settle(message, "blocked", "blocked: outgoing mail is switched off (staging); recorded, not sent")
    details["attempts"] = details.get("attempts", 0) + 1
    hand_over = (lambda: handing_over(message)) if handing_over is not None else None
    try:
        # A Graph mailbox sends the MIME we composed with sendMail, as the mailbox itself.
        result = (graph.send(server, email, hand_over=hand_over) if isinstance(server, graph.GraphSettings)
                  else send(server, email, hand_over=hand_over))
    except graph.TokenRefused as exc:
        # Refused before it expired: the next try asks for a new token, and a grant the provider
        # refuses then fails the mail with its words.
        forget_access_token(mailbox.oauth)
        if servers is not None:
            servers.pop(message.mailbox_id, None)
        return _not_sent(message, details, TransportError(exc.kind, exc.message, transient=True), now)
    except TransportError as exc:
        return _not_sent(message, details, exc, now)
    message.details = details
    return _sent(message, details, recipients, override, result, now)

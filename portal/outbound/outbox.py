"""Outbound mail as an outbox: a mail to send is a queued outbound Message, written in the
same transaction as whatever caused it (a new ticket, a reply, a failing mailbox), so that
nothing is lost or sent twice. Nothing is rendered or sent here: the sender job does that
(portal.outbound.deliver), and ask_for_send is the one way to ask for it. Flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from portal.extensions import db
from portal.jobs import enqueue
from portal.mail import threads
from portal.mail.compose import AUTOMATIC_BY_EVENT
from portal.models import Mailbox, Message, Ticket, User
from portal.outbound.settings import customer_notifications
from portal.services import ValidationError, audit

# The sender job: one waiting at a time, and no trace of it once done (so it can be queued again).
SEND_JOB = "workers.sending.send_due"
SEND_OPTIONS = {"job_id": "send-outbox", "unique": True, "result_ttl": 0, "failure_ttl": 300}


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


# What a person may send again: mail that failed, and mail that may not have arrived (a sending
# run stopped while its server was taking it: portal.outbound.deliver.settle_interrupted).
SENT_AGAIN = ("failed", "uncertain")


def send_again(message: Message, actor: User) -> None:
    """Queue a mail that failed, or may not have arrived, once more, at a person's word. Its tries
    start over; it keeps its Message-ID, so a recipient who has it already sees the same mail
    again, not a new one; the loop guards let it pass, as a person's action cannot loop."""
    if message.direction != "out" or message.delivery not in SENT_AGAIN:
        raise ValidationError({"": ["Only mail that failed, or that may not have arrived, can be sent again."]})
    details = {k: v for k, v in message.details.items() if k != "next_attempt"}
    message.details = {**details, "attempts": 0, "sent_again_by": actor.id}
    if message.ticket_id is not None:
        audit.record(actor, message.msp_id, "ticket", message.ticket_id, "send again",
                     {"delivery": [message.delivery, "queued"]})
    message.delivery = "queued"
    message.delivery_note = f"queued again by {actor.name or actor.email}"
    ask_for_send()


def outbound_ids(states: Sequence[str], *where) -> list[int]:
    """The ids of outbound mail in these delivery states (and matching `where`), ascending. Sorted
    here, not by the database: given ORDER BY id and LIMIT, SQLite may walk the whole messages
    table by id instead of the outbox index (ix_messages_outbox); it did at 3,000,000 messages
    once ANALYZE had run, 116 ms a look instead of 0.05."""
    return sorted(db.session.scalars(select(Message.id).where(
        Message.direction == "out", Message.delivery.in_(tuple(states)), *where)))


def ask_for_send() -> None:
    """The one way to ask for the sender job: after the commit, one waiting at a time."""
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
    if event not in customer_notifications(ticket.client):
        return None
    if ticket.contact is None or not ticket.contact.email:
        return None
    return _queue_notification(event, ticket, [ticket.contact.email], {"by_person": by_person}, answering)


def _queue_notification(event: str, ticket: Ticket, to: list[str], details: dict,
                        answering: Message | None = None) -> Message:
    in_reply_to, references = conversation_thread(ticket, answering=answering)
    return queue_mail(event, msp_id=ticket.msp_id, ticket=ticket, to=to, in_reply_to=in_reply_to,
                      references=references, details=details)

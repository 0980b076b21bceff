"""Running stored mail through the pipeline again, and the routing check.

`replay` is the one way to decide a stored raw message again, from its bytes: the command line
(`flask mail reprocess`) and the unprocessed pages (re-run, teach) both call it. `attempt` runs
such a decision for a person, in a savepoint, and returns the error instead of raising it. The
routing check runs the real decision on a sample email in a savepoint that is rolled back.
Flush, never commit.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select

from portal.extensions import db
from portal.inbound.context import IngestContext
from portal.inbound.decide import IngestResult, decide, refresh_on_ticket
from portal.mail.explain import explain_message
from portal.mail.route import BCC_CAUSE
from portal.models import Client, Mailbox, Message, RawMessage, Ticket
from portal.models.base import utcnow
from portal.outbound.templates import acknowledgement_in_effect
from portal.services import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipeline:
    """What deciding needs from the app's configuration."""

    secret: bytes
    host: str | None = None


def context_for(stored: RawMessage, pipeline: Pipeline) -> IngestContext:
    if stored.mailbox is None:
        raise ValidationError({"": ["The mailbox this email arrived in no longer exists; it can only be discarded."]})
    return IngestContext(stored.mailbox, pipeline.secret, pipeline.host)


def replay(stored: RawMessage, ctx: IngestContext) -> IngestResult:
    """Run a stored raw message through the pipeline again, from its bytes. Mail already on a
    ticket stays there (its body is derived again); any other mail is decided afresh."""
    stored.state, stored.tries, stored.last_error = "new", 0, None
    on_ticket = db.session.scalar(select(Message.ticket_id).where(Message.raw_message_id == stored.id))
    if on_ticket is not None:
        if stored.raw is None:  # removed after its retention (portal.inbound.retention)
            raise ValidationError({"": ["The original of this email was removed after the MSP's retention period; "
                                        "its ticket keeps the text, but it cannot be read again."]})
        return refresh_on_ticket(stored, ctx)
    result = decide(stored, ctx)
    ctx.numbers.save()  # else the next ticket would be given the same number again
    return result


@dataclass
class Outcome:
    """What became of one email: its result, or the error that stopped it."""

    message: Message
    result: IngestResult | None = None
    error: str | None = None

    @property
    def placed(self) -> bool:
        return self.result is not None and self.result.ticket is not None

    @property
    def ticket(self) -> Ticket | None:
        return self.result.ticket if self.result else None


def attempt(message: Message, ctx: IngestContext, decide_again: Callable[[RawMessage], IngestResult]) -> Outcome:
    """Decide one stored email in its own savepoint: a failure undoes only its own work."""
    stored = message.raw_message
    stored.state, stored.tries, stored.last_error = "new", 0, None
    try:
        with db.session.begin_nested():
            result = decide_again(stored)
            ctx.numbers.save()
            db.session.flush()
    except Exception as exc:  # noqa: BLE001 - shown to the person who asked
        log.exception("deciding raw message %s again failed", stored.id)
        ctx.forget_batch()
        stored.state, stored.tries, stored.last_error = "failed", 1, f"{type(exc).__name__}: {exc}"[:2000]
        db.session.flush()
        return Outcome(message, error=stored.last_error)
    return Outcome(message, result)


# --- the routing check ---------------------------------------------------------------------------


@dataclass
class CheckInput:
    mailbox_id: int | None = None
    sender: str = ""
    to: str = ""
    cc: str = ""
    subject: str = ""
    body: str = ""
    raw: str = ""


@dataclass
class CheckResult:
    """What the decision would do, read before everything it did is rolled back."""

    outcome: str
    client: str | None
    route: str | None
    ticket: str | None
    ticket_is_new: bool
    status: str | None
    acknowledge: bool | None
    trace: list[str]
    reads: dict  # what the email logic reads in it (portal.mail.explain)
    mailbox_id: int | None = None
    # The email only reached the mailbox by BCC, and no wildcard route takes its sender: the
    # sender's domain, for the fix the page offers.
    bcc_sender: str | None = None
    # (route, what it would have done) for each route in test that would have taken the email
    tested: list[tuple[str, str]] = field(default_factory=list)
    # The template the acknowledgement would be written with, in plain words.
    acknowledgement: str | None = None


def _split(text: str) -> list[str]:
    return [p.strip() for p in (text or "").replace(";", ",").replace("\n", ",").split(",") if p.strip()]


def compose_check_email(data: CheckInput) -> bytes:
    """The email to check: pasted as it is, or built from the typed headers."""
    if data.raw.strip():
        return data.raw.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    msg = EmailMessage()
    msg["From"] = data.sender.strip()
    if _split(data.to):
        msg["To"] = ", ".join(_split(data.to))
    if _split(data.cc):
        msg["Cc"] = ", ".join(_split(data.cc))
    msg["Subject"] = data.subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain="routing-check.invalid")
    msg.set_content(data.body or "(routing check)")
    return msg.as_bytes()


def _bcc_sender(result: IngestResult) -> str | None:
    sender = result.message.from_address or ""
    if result.outcome != "unprocessed" or "@" not in sender or BCC_CAUSE not in (result.trace or [""])[-1]:
        return None
    return sender.rpartition("@")[2].lower()


def check_routing(msp_id: int, data: CheckInput, pipeline: Pipeline) -> CheckResult:
    """Run the email through the real decision (steps 3–9) in a savepoint that is rolled back:
    nothing is saved, no ticket number is used up, no mail is queued."""
    errors: dict[str, list[str]] = {}
    mailbox = db.session.scalar(select(Mailbox).where(Mailbox.id == data.mailbox_id, Mailbox.msp_id == msp_id)) \
        if data.mailbox_id else None
    if mailbox is None:
        errors["mailbox_id"] = ["Choose the mailbox the email arrives in."]
    if not data.raw.strip():
        if "@" not in data.sender:
            errors["sender"] = ["Type the sender's address (From), or paste a whole email below."]
        for name in ("to", "cc"):
            bad = [a for a in _split(getattr(data, name)) if "@" not in a]
            if bad:
                errors[name] = [f"{', '.join(bad)} is not an email address."]
    if errors:
        raise ValidationError(errors)
    try:
        raw_bytes = compose_check_email(data)
    except (ValueError, TypeError) as exc:
        raise ValidationError({"raw" if data.raw.strip() else "sender": [f"This is not a usable email: {exc}."]}) \
            from None
    ctx = IngestContext(mailbox, pipeline.secret, pipeline.host)
    savepoint = db.session.begin_nested()
    try:
        stored = RawMessage(msp_id=msp_id, mailbox_id=mailbox.id, mailbox=mailbox, folder="routing-check",
                            server_id=f"routing-check:{uuid.uuid4().hex}",
                            sha256=hashlib.sha256(raw_bytes).hexdigest(), size=len(raw_bytes), raw=raw_bytes,
                            state="new")
        result = decide(stored, ctx)
        # Flushed inside the savepoint, so that its rollback takes back every change, the
        # ones to existing rows (a ticket's status) included.
        db.session.flush()
        ticket = result.ticket
        route_id = (result.message.details or {}).get("route_id")
        client_id = ticket.client_id if ticket else None
        found = CheckResult(
            outcome=result.outcome,
            client=ctx.clients[client_id].name if client_id in ctx.clients else None,
            route=ctx.routes_by_id[route_id].name if route_id in ctx.routes_by_id else None,
            ticket=ticket.reference if ticket else None,
            ticket_is_new=result.outcome == "created",
            status=ticket.status if ticket else None,
            acknowledge=(result.message.details or {}).get("acknowledge") if ticket else None,
            trace=list(result.trace),
            mailbox_id=mailbox.id,
            bcc_sender=_bcc_sender(result),
            tested=list(result.tested),
            acknowledgement=acknowledgement_in_effect(db.session.get(Client, client_id),
                                                      (result.message.details or {}).get("acknowledgement_variant"))
            if ticket and (result.message.details or {}).get("acknowledge") else None,
            reads=explain_message(raw_bytes, file="routing check",
                                  waterlines=[w for w in [ctx.waterline(client_id or mailbox.client_id)] if w],
                                  ref_format=ctx.ref_format, secret=pipeline.secret),
        )
    except Exception as exc:  # noqa: BLE001 - the person checking sees why
        log.exception("routing check failed")
        savepoint.rollback()
        raise ValidationError({"": [f"The check could not run this email: {type(exc).__name__}: {exc}"]}) from None
    savepoint.rollback()
    return found

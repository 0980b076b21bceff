"""What a technician adds to a ticket's conversation: a reply to the customer (its addresses,
its body as written in the editor, files and inline images), the earlier conversation to quote,
and internal notes. Flush, never commit."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo

from sqlalchemy import select

from portal.extensions import db
from portal.mail.compose import AddressError, parse_addresses
from portal.mail.html_body import html_to_text
from portal.mail.language import DEFAULT_LANGUAGE, quote_header, written_time
from portal.mail.sanitize import sanitize_html
from portal.models import Attachment, Client, Mailbox, Message, Ticket, User
from portal.models.base import utcnow
from portal.services import ValidationError
from portal.outbound.outbox import conversation_thread, queue_mail
from portal.outbound.templates import template_in_effect
from portal.services.tickets import WORK_STATUSES, change_status


# A reply goes to at most this many addresses, To and Cc together: the portal is no way to mail a
# crowd, and the last mail naming thousands (a mail bomb's 10,000 recipients) must not make a
# technician's reply go to all of them.
MAX_RECIPIENTS = 100


def reply_defaults(ticket: Ticket) -> tuple[list[str], list[str], int]:
    """To and Cc for a reply, and how many addresses were left out to keep to MAX_RECIPIENTS."""
    to, cc = _last_addresses(ticket)
    room = max(MAX_RECIPIENTS - len(to), 0)
    return to, cc[:room], max(len(cc) - room, 0)


def _last_addresses(ticket: Ticket) -> tuple[list[str], list[str]]:
    """To and Cc from the last email of the conversation, without our own addresses."""
    ours: set[str] = set()
    if ticket.mailbox_id:
        ours = {a.lower() for a in db.session.get(Mailbox, ticket.mailbox_id).addresses}
    last = db.session.scalar(select(Message).where(Message.ticket_id == ticket.id, Message.direction == "in")
                             .order_by(Message.id.desc()).limit(1))
    if last is None:
        return ([ticket.contact.email] if ticket.contact else []), list(ticket.cc)
    to = [last.from_address] if last.from_address else []
    cc = [p["address"] for p in (*last.to, *last.cc) if p["address"].lower() not in ours and p["address"] not in to]
    return to, cc


MAX_SIGNATURE_CHARS = 2000


def default_signature(author: User, msp_name: str) -> str:
    """The sign-off a reply carries unless the technician edits it in the composer: their name and
    the MSP's (what the built-in reply template used to append without showing it)."""
    return "\n".join(part for part in (author.name or author.email, msp_name) if part)


def reply_signature(ticket: Ticket, author: User) -> str:
    return default_signature(author, db.session.get(Client, ticket.msp_id).name)


def template_shows_signature(ticket: Ticket) -> bool:
    """Whether the reply template in effect for the ticket's client places the composer's
    signature; a custom one written before it did not, and signs off in its own way."""
    texts = template_in_effect(ticket.client, "reply")
    return "message.signature" in f"{texts.text_source or ''}{texts.html_source or ''}{texts.body or ''}"


def _addresses(text: str, field_name: str, errors: dict) -> list[str]:
    """Addresses typed into a field, separated by commas, semicolons or new lines."""
    parts = [p.strip() for p in re.split(r"[,;\n]+", text or "") if p.strip()]
    try:
        return [a.addr_spec for a in parse_addresses(parts)]
    except AddressError as exc:
        errors.setdefault(field_name, []).append(f"{exc}.")
        return []


# --- what a reply carries: its body as written in the editor, files and inline images -----------

MB = 1024 * 1024
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# Content-IDs the composer gives pasted images; anything else is not ours to reference.
CONTENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATA_IMAGE = re.compile(r'src="data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=\s]+)"', re.IGNORECASE)
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@dataclass(frozen=True)
class ReplyFile:
    """A file sent with a reply. With a content_id it is an image the HTML shows as cid:."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


@dataclass(frozen=True)
class FileLimits:
    each: int = 10 * MB
    total: int = 25 * MB


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB / 10 else f"{max(1, round(n / 1024))} KB"


def clean_filename(name: str) -> str:
    """The last part of an uploaded name, without control characters; never empty."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().strip(".")
    return name[:255] or "attachment"


def _content_type(given: str | None, filename: str) -> str:
    value = (given or "").split(";")[0].strip().lower()
    if not _MIME_TYPE.match(value) or value == "application/octet-stream":
        value = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return value


def _extract_data_images(html: str) -> tuple[str, list[ReplyFile]]:
    """Images pasted as data: URLs become cid: parts (mail clients block data: images)."""
    found: list[ReplyFile] = []

    def to_cid(match: re.Match) -> str:
        try:
            data = base64.b64decode("".join(match.group(2).split()), validate=True)
        except ValueError:
            return 'src=""'
        cid = f"img{len(found) + 1}.{hashlib.sha256(data).hexdigest()[:16]}"
        ctype = match.group(1).lower()
        found.append(ReplyFile(f"image-{len(found) + 1}{mimetypes.guess_extension(ctype) or '.img'}",
                               ctype, data, cid))
        return f'src="cid:{cid}"'

    return _DATA_IMAGE.sub(to_cid, html), found


@dataclass
class ReplyBody:
    text: str
    html: str | None
    files: list[ReplyFile]


def reply_body(text: str, html: str, files: Sequence[ReplyFile], limits: FileLimits,
               errors: dict[str, list[str]]) -> ReplyBody:
    """The body as the editor wrote it (sanitised; the text part derived from it) or as plain
    text, and the files it carries, checked against the limits. Problems go into errors."""
    html = (html or "").strip()
    body_html = None
    if html:
        body_html, pasted = _extract_data_images(sanitize_html(html))
        body_text = html_to_text(body_html).strip()
        files = [*files, *pasted]
        if not body_text and "<img" not in body_html:
            errors.setdefault("text", []).append("Write the reply.")
    else:
        body_text = (text or "").strip()
        if not body_text:
            errors.setdefault("text", []).append("Write the reply.")
    kept: list[ReplyFile] = []
    for f in files:
        if f.content_id is not None:
            if body_html is None or f"cid:{f.content_id}" not in body_html:
                continue  # an image removed from the text again
            if f.content_type not in INLINE_IMAGE_TYPES:
                errors.setdefault("attachments", []).append(
                    f"{f.filename} cannot be shown in the text: images are PNG, JPEG, GIF or WebP.")
                continue
        if len(f.data) > limits.each:
            errors.setdefault("attachments", []).append(
                f"{f.filename} is more than {_size(limits.each)}; each file may be at most {_size(limits.each)}.")
        kept.append(f)
    total = sum(len(f.data) for f in kept)
    if total > limits.total:
        errors.setdefault("attachments", []).append(
            f"The files add up to {_size(total)}; a reply may carry at most {_size(limits.total)} in all.")
    return ReplyBody(body_text, body_html, kept)


def from_choices(ticket: Ticket) -> list[str]:
    """The addresses a reply on the ticket may be From, the default first; none without a mailbox."""
    mailbox = db.session.get(Mailbox, ticket.mailbox_id) if ticket.mailbox_id else None
    return mailbox.from_addresses if mailbox is not None else []


def _chosen_from(ticket: Ticket, chosen: str, errors: dict) -> str | None:
    """The From chosen in the composer, as the mailbox spells it; empty: the mailbox's default.
    Anything that is not an address of the ticket's mailbox is refused."""
    offered = from_choices(ticket)
    chosen = (chosen or "").strip()
    if not chosen:
        return offered[0] if offered else None
    for address in offered:
        if address.lower() == chosen.lower():
            return address
    errors["from_address"] = [f"{chosen} is not an address of this ticket's mailbox; reply from "
                              + (", ".join(offered) if offered else "the default address (the ticket has no mailbox)")
                              + "."]
    return None


def reply(ticket: Ticket, author: User, *, to: str, cc: str, text: str, set_status: str = "", html: str = "",
          files: Sequence[ReplyFile] = (), limits: FileLimits | None = None, signature: str | None = None,
          from_address: str = "") -> Message:
    """A technician's public reply: into the outbox (the reply template wraps the text).
    html: what the editor wrote (sanitised here; the plain-text part is derived from it);
    files: attachments, and the images the HTML shows as cid: (those with a content_id);
    signature: the sign-off as shown (and perhaps edited) in the composer, sent as it is ("" for
    none); None: the default one. from_address: one of the mailbox's addresses (from_choices);
    empty: its default. Kept on the message, so that a retry sends the same From."""
    errors: dict[str, list[str]] = {}
    sender = _chosen_from(ticket, from_address, errors)
    to_list = _addresses(to, "to", errors)
    cc_list = _addresses(cc, "cc", errors)
    if not to_list and "to" not in errors:
        errors["to"] = ["Send the reply to at least one address."]
    if len(to_list) + len(cc_list) > MAX_RECIPIENTS:
        errors["cc" if cc_list else "to"] = [f"A reply goes to at most {MAX_RECIPIENTS} addresses, To and Cc "
                                             f"together; this one names {len(to_list) + len(cc_list):,}."]
    body = reply_body(text, html, files, limits or FileLimits(), errors)
    signature = reply_signature(ticket, author) if signature is None else _clean_signature(signature)
    if len(signature) > MAX_SIGNATURE_CHARS:
        errors["signature"] = [f"The signature is longer than {MAX_SIGNATURE_CHARS:,} characters."]
    if set_status and set_status not in WORK_STATUSES:
        errors["set_status"] = [f"The status is one of {', '.join(WORK_STATUSES)}."]
    if errors:
        raise ValidationError(errors)
    in_reply_to, thread = conversation_thread(ticket)
    message = queue_mail("reply", msp_id=ticket.msp_id, ticket=ticket, to=to_list, cc=cc_list, author_id=author.id,
                         in_reply_to=in_reply_to, references=thread, body_text=body.text, body_html=body.html,
                         details={"signature": signature, **({"from_address": sender} if sender else {})})
    message.from_name, message.from_address = author.name or author.email, author.email
    for f in body.files:
        name = clean_filename(f.filename)
        message.attachments.append(Attachment(
            filename=name, content_type=_content_type(f.content_type, name), size=len(f.data),
            sha256=hashlib.sha256(f.data).hexdigest(), content_id=f.content_id, inline=f.content_id is not None,
            data=f.data))
    ticket.new_information = False
    ticket.updated_at = utcnow()
    if set_status:
        change_status(ticket, set_status, author)
    db.session.flush()
    return message


def _clean_signature(text: str) -> str:
    lines = [line.rstrip() for line in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


HISTORY_LIMIT = 50


def quoted_history(ticket: Ticket, tz: tzinfo, language: str = DEFAULT_LANGUAGE) -> str:
    """The conversation so far as HTML to quote in a reply, newest first: "On <date>, <name>
    wrote:" (the date in `tz` and the line in `language`: the client's, as the rest of the
    customer's mail) and the body as
    it stands on the ticket (cut at the waterline). Internal notes,
    automatic mail and replies that never went out stay out: the customer never saw them."""
    rows = db.session.scalars(select(Message).where(Message.ticket_id == ticket.id,
                                                    Message.direction.in_(("in", "out")))
                              .order_by(Message.id.desc()).limit(HISTORY_LIMIT * 2))
    parts: list[str] = []
    for m in rows:
        if m.direction == "out" and (m.details.get("automatic") or m.delivery != "sent"):
            continue
        body = (m.body_text or "").strip()
        if not body:
            continue
        at = written_time(m.sent_at or m.created_at, tz, language)
        who = m.from_name or m.from_address or "someone"
        lines = "<br>".join(html_lib.escape(line) for line in body.split("\n"))
        parts.append(f"<p>{html_lib.escape(quote_header(at, who, language))}</p>"
                     f'<blockquote type="cite">{lines}</blockquote>')
        if len(parts) == HISTORY_LIMIT:
            break
    return "".join(parts)


def add_note(ticket: Ticket, author: User, text: str) -> Message:
    """An internal note: on the ticket, never emailed."""
    if not (text or "").strip():
        raise ValidationError({"note": ["Write the note."]})
    note = Message(msp_id=ticket.msp_id, ticket=ticket, direction="note", author_id=author.id,
                   from_name=author.name or author.email, from_address=author.email, body_text=text.strip())
    db.session.add(note)
    ticket.updated_at = utcnow()
    db.session.flush()
    return note

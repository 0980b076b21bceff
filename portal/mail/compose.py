"""Build outbound mail: the MIME structure, threading headers, reference token, RFC 3834 headers.

    multipart/mixed                      (only with attachments)
      multipart/alternative
        text/plain                       rendered text + reference token
        multipart/related                (only with cid: images)
          text/html                      rendered HTML (CSS already inlined) + reference token
          image/…                        Content-ID, inline
      application/…                      attachments

Addresses are validated; names, subjects and file names are encoded for any mail server (RFC 2047
and RFC 2231, IDNA domains, quoted-printable bodies), so nothing here needs SMTPUTF8 or 8BITMIME.
Pure Python: no Flask, SQLAlchemy or RQ.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import headerregistry, policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from portal.mail.refs import RefFormat, make_message_id

# Mail carrying this header with our host came from us; the inbound side treats it as our own.
LOOP_HEADER = "X-Tidemark-Loop"
AUTO_REPLIED = "auto-replied"  # an automatic answer to a person's mail (acknowledgement)
AUTO_GENERATED = "auto-generated"  # a notification nobody asked for by writing (alerts, updates)
PRECEDENCE = {AUTO_REPLIED: "auto_reply", AUTO_GENERATED: "bulk"}
# How each template event is sent; None: written by a person (a technician's reply).
AUTOMATIC_BY_EVENT = {
    "ticket_created": AUTO_REPLIED,
    "reply": None,
    "note_added": AUTO_GENERATED,
    "reopened": AUTO_GENERATED,
    "owner_changed": AUTO_GENERATED,
    "priority_changed": AUTO_GENERATED,
    "closed": AUTO_GENERATED,
    "alert": AUTO_GENERATED,
    "mailbox_failing": AUTO_GENERATED,
    "sign_in_expiring": AUTO_GENERATED,
    "reconnect_needed": AUTO_GENERATED,
    "sla_warning": AUTO_GENERATED,
    "sla_breached": AUTO_GENERATED,
    "sla_changed": AUTO_GENERATED,
}
PLUS_MODES = ("off", "mixed", "only")
# Long conversations: keep the first id (the thread root) and the most recent ones.
MAX_REFERENCES = 20
MAX_LINE_7BIT = 998


class AddressError(ValueError):
    """A recipient or sender address that cannot be used, in plain words."""


@dataclass(frozen=True)
class InlineImage:
    """An image the HTML shows as `<img src="cid:{cid}">`."""

    cid: str
    data: bytes
    content_type: str = "image/png"
    filename: str | None = None


@dataclass(frozen=True)
class FileAttachment:
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


# --- policy: CRLF, 78-column folding, and msg-id lists that are folded but never encoded ------


class _IdListHeader(headerregistry.UnstructuredHeader):
    """In-Reply-To / References. The stock folder turns ids longer than a line into RFC 2047
    encoded words, which breaks threading everywhere; fold between ids instead."""

    def fold(self, *, policy) -> str:
        head = f"{self.name}:"
        lines, line = [], head
        for mid in str(self).split():
            if line != head and len(line) + 1 + len(mid) > policy.max_line_length:
                lines.append(line)
                line = ""
            line += " " + mid
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


_registry = headerregistry.HeaderRegistry()
_registry.map_to_type("references", _IdListHeader)
_registry.map_to_type("in-reply-to", _IdListHeader)
POLICY = email_policy.SMTP.clone(header_factory=_registry)


# --- addresses ---------------------------------------------------------------------------------

_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def parse_address(value: str | tuple[str | None, str] | Address) -> Address:
    """'Name <addr>', 'addr', (name, addr) or an Address → a checked Address (IDNA domain)."""
    if isinstance(value, Address):
        name, spec = value.display_name, value.addr_spec
    elif isinstance(value, tuple):
        name, spec = value[0] or "", value[1] or ""
    else:
        text = " ".join(str(value or "").split())
        match = re.match(r"^(.*?)\s*<([^<>]*)>$", text)
        name, spec = (match.group(1), match.group(2)) if match else ("", text)
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    spec = spec.strip()
    if any(ch in (name or "") for ch in "\r\n\0"):
        raise AddressError(f"the name for “{spec}” contains a line break")
    local, at, domain = spec.rpartition("@")
    if not spec:
        raise AddressError("type an email address, e.g. name@contoso.com")
    if not at or not local or not domain:
        raise AddressError(f"“{spec}” is not an email address like name@contoso.com")
    if not _LOCAL_RE.match(local) or len(local) > 64:
        if not local.isascii():
            raise AddressError(f"“{spec}” cannot be sent to: the address has non-ASCII characters before the @")
        raise AddressError(f"“{spec}” is not an email address like name@contoso.com")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AddressError(f"“{spec}” is not an email address like name@contoso.com") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels) or len(ascii_domain) > 253:
        raise AddressError(f"“{spec}” is not an email address like name@contoso.com")
    return Address(display_name=name or "", username=local, domain=ascii_domain)


def parse_addresses(values: Iterable | str | None) -> list[Address]:
    """Several addresses, duplicates (same address, any case) dropped, order kept."""
    if values is None:
        return []
    if isinstance(values, (str, Address)) or (
            isinstance(values, tuple) and len(values) == 2 and all(v is None or isinstance(v, str) for v in values)
            and "@" in (values[1] or "")):
        values = [values]
    seen, result = set(), []
    for value in values:
        address = parse_address(value)
        key = address.addr_spec.lower()
        if key not in seen:
            seen.add(key)
            result.append(address)
    return result


# --- message ids -------------------------------------------------------------------------------

_MSGID_RE = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


def _message_ids(values: Iterable[str] | str | None) -> list[str]:
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    found: list[str] = []
    for value in values:
        text = str(value or "").strip()
        if text and "<" not in text:
            text = f"<{text}>"
        for mid in _MSGID_RE.findall(text):
            if mid not in found:
                found.append(mid)
    return found


def references_chain(references: Iterable[str] | str | None, in_reply_to: str | None,
                     limit: int = MAX_REFERENCES) -> list[str]:
    """References for a reply: the conversation's ids plus the one answered, capped at limit."""
    chain = _message_ids(references)
    for mid in _message_ids(in_reply_to):
        if mid not in chain:
            chain.append(mid)
    if len(chain) > limit:
        chain = chain[:1] + chain[-(limit - 1):]
    return chain


# --- bodies ------------------------------------------------------------------------------------


def _cte(text: str) -> str:
    if text.isascii() and all(len(line) <= MAX_LINE_7BIT for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def _with_token_text(text: str, token: str | None) -> str:
    text = (text or "").rstrip("\n")
    return f"{text}\n\n{token}\n" if token else f"{text}\n"


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _with_token_html(html: str, token_html: str | None) -> str:
    if not token_html:
        return html
    block = f'<div style="margin:12px 0 0 0">{token_html}</div>'
    matches = list(_BODY_END.finditer(html))
    if matches:
        at = matches[-1].start()
        return html[:at] + block + html[at:]
    return html + block


def _embed_images(html: str, images: Sequence[InlineImage]) -> str:
    for image in images:
        data = base64.b64encode(image.data).decode("ascii")
        pattern = re.compile(r"cid:" + re.escape(image.cid) + r"(?=[\"'\s)>])")
        html = pattern.sub(f"data:{image.content_type};base64,{data}", html)
    return html


def _split_type(content_type: str, fallback: str) -> tuple[str, str]:
    maintype, _, subtype = (content_type or fallback).partition(";")[0].strip().lower().partition("/")
    if not maintype or not subtype:
        maintype, _, subtype = fallback.partition("/")
    return maintype, subtype


# --- compose -----------------------------------------------------------------------------------


def compose(
    rendered,
    *,
    from_address: str,
    to: Sequence | str,
    host: str,
    from_name: str | None = None,
    cc: Sequence | str = (),
    reply_to: str | None = None,
    ticket_ref: str | None = None,
    ticket_uuid: uuid.UUID | str | None = None,
    ref_format: RefFormat | None = None,
    secret: bytes | None = None,
    plus_mode: str = "off",
    plus_in: str = "reply-to",
    in_reply_to: str | None = None,
    references: Sequence[str] | str = (),
    automatic: str | None = None,
    attachments: Sequence[FileAttachment] = (),
    inline_images: Sequence[InlineImage] = (),
    embed_images: bool = False,
    date: dt.datetime | None = None,
    message_id: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """The outbound message for a RenderedEmail (portal.mail.render), ready for smtp.send().

    ticket_ref + secret: the subject gets the reference (ref_format.subject_with_ref), both parts
    the signed reference token, and with plus_mode "mixed"/"only" the plus-address tag goes into
    Reply-To (plus_in="reply-to", default) or From (plus_in="from").
    ticket_uuid: our Message-ID is `<random.ticket-uuid@host>`; without it a random id @host.
    automatic: None (a person wrote it), AUTO_REPLIED or AUTO_GENERATED (RFC 3834 headers).
    inline_images: cid: parts (default) or, with embed_images, base64 data: URLs in the HTML.
    Raises AddressError for an unusable address, ValueError for bad options.
    """
    _check_options(plus_mode, plus_in, automatic, ticket_ref, secret)
    ref_format = ref_format or RefFormat()
    sender, recipients, copies, answer_to = _parties(
        from_address, from_name, to, cc, reply_to, ticket_ref, ref_format, secret, plus_mode, plus_in)

    subject = " ".join((rendered.subject or "").split())
    token = token_html = None
    if ticket_ref:
        subject = ref_format.subject_with_ref(subject, ticket_ref)
        token = ref_format.token(ticket_ref, secret)
        token_html = ref_format.token_html(ticket_ref, secret)

    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = recipients
    if copies:
        msg["Cc"] = copies
    if answer_to is not None and answer_to.addr_spec.lower() != sender.addr_spec.lower():
        msg["Reply-To"] = answer_to
    msg["Subject"] = subject
    msg["Date"] = format_datetime((date or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc))
    _set_thread_headers(msg, host, message_id, ticket_uuid, in_reply_to, references)
    _set_automatic_headers(msg, host, automatic, extra_headers)
    _set_bodies(msg, rendered, token, token_html, inline_images, embed_images)
    _attach(msg, attachments)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package repeats it on parts it wraps
    return msg


def _check_options(plus_mode: str, plus_in: str, automatic: str | None, ticket_ref: str | None,
                   secret: bytes | None) -> None:
    if plus_mode not in PLUS_MODES:
        raise ValueError(f"plus_mode must be one of {PLUS_MODES}, not {plus_mode!r}")
    if plus_in not in ("reply-to", "from"):
        raise ValueError("plus_in is 'reply-to' or 'from'")
    if automatic not in (None, AUTO_REPLIED, AUTO_GENERATED):
        raise ValueError(f"automatic must be None, {AUTO_REPLIED!r} or {AUTO_GENERATED!r}")
    if ticket_ref and not secret:
        raise ValueError("a secret is needed to sign the reference token")


def _parties(from_address: str, from_name: str | None, to: Sequence | str, cc: Sequence | str,
             reply_to: str | None, ticket_ref: str | None, ref_format: RefFormat, secret: bytes | None,
             plus_mode: str, plus_in: str) -> tuple[Address, list[Address], list[Address], Address | None]:
    """(From, To, Cc without the To addresses, Reply-To or None), the plus-address tag put in place."""
    sender = parse_address((from_name or "", from_address))
    recipients = parse_addresses(to)
    copies = [a for a in parse_addresses(cc) if a.addr_spec.lower() not in {r.addr_spec.lower() for r in recipients}]
    if not recipients:
        raise AddressError("the mail has no recipient")
    answer_to = parse_address((from_name or "", reply_to)) if reply_to else None
    if ticket_ref and plus_mode != "off":
        base = answer_to or sender
        tagged = parse_address((base.display_name, ref_format.plus_address(base.addr_spec, ticket_ref, secret)))
        if plus_in == "from":
            sender = tagged
        else:
            answer_to = tagged
    return sender, recipients, copies, answer_to


def _set_thread_headers(msg: EmailMessage, host: str, message_id: str | None, ticket_uuid: uuid.UUID | str | None,
                        in_reply_to: str | None, references: Sequence[str] | str) -> None:
    """Message-ID, In-Reply-To and References."""
    if message_id:
        own_id = _message_ids(message_id)
        if not own_id:
            raise ValueError(f"not a Message-ID: {message_id!r}")
        msg["Message-ID"] = own_id[0]
    elif ticket_uuid:
        msg["Message-ID"] = make_message_id(ticket_uuid, host)
    else:
        msg["Message-ID"] = make_msgid(domain=host)
    parent = _message_ids(in_reply_to)
    if parent:
        msg["In-Reply-To"] = parent[0]
    chain = references_chain(references, in_reply_to)
    if chain:
        msg["References"] = " ".join(chain)


def _set_automatic_headers(msg: EmailMessage, host: str, automatic: str | None,
                           extra_headers: Mapping[str, str] | None) -> None:
    """The RFC 3834 headers of automatic mail, our loop header, and the caller's extra headers."""
    if automatic:
        msg["Auto-Submitted"] = automatic
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = PRECEDENCE[automatic]
    msg[LOOP_HEADER] = host
    for name, value in (extra_headers or {}).items():
        if any(ch in f"{name}{value}" for ch in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break")
        msg[name] = value


def _set_bodies(msg: EmailMessage, rendered, token: str | None, token_html: str | None,
                inline_images: Sequence[InlineImage], embed_images: bool) -> None:
    """The text part and, when there is HTML, the HTML alternative with its cid: images."""
    text = _with_token_text(rendered.text, token)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_cte(text))
    html = rendered.html
    if html is not None:
        if inline_images and embed_images:
            html = _embed_images(html, inline_images)
        html = _with_token_html(html, token_html)
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
        if inline_images and not embed_images:
            html_part = msg.get_payload()[1]
            for image in inline_images:
                maintype, subtype = _split_type(image.content_type, "image/png")
                html_part.add_related(image.data, maintype, subtype, cid=f"<{image.cid.strip('<>')}>",
                                      disposition="inline", filename=image.filename)


def _attach(msg: EmailMessage, attachments: Sequence[FileAttachment]) -> None:
    for attachment in attachments:
        maintype, subtype = _split_type(attachment.content_type, "application/octet-stream")
        if maintype in ("message", "multipart"):
            # The email package wants parsed objects for these; the bytes must travel untouched.
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(attachment.data, maintype, subtype, filename=attachment.filename)

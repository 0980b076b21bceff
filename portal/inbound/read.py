"""DESIGN step 2, and what else one stored message tells without the database: parsed,
classified, fingerprinted, its references found, its body cut ahead for the waterline of the
sender's likely client. Pure, and given only plain values (ReadingSetup), so that a batch can be
read in another thread or process while the previous batch waits on its writes
(portal.inbound.fetch.Decider, portal.inbound.reading).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portal.mail.allowlist import allow_list_match
from portal.mail.classify import Classification, classify
from portal.mail.cut import cut_body
from portal.mail.fingerprint import Fingerprints, fingerprints
from portal.mail.parse import ParsedEmail, parse_email
from portal.mail.refs import REPLY_MARKER, RefFormat
from portal.mail.sanitize import sanitize_html
from portal.models import RawMessage

# Envelope headers that may carry the plus address when To/Cc do not (BCC, forwarding).
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to")


@dataclass
class Prepared:
    """A stored message read once: parsed, classified, fingerprinted, references found."""

    stored: RawMessage | None
    parsed: ParsedEmail | None = None
    cls: Classification | None = None
    fps: Fingerprints | None = None
    sender: str = ""
    thread_ids: list[str] = field(default_factory=list)
    plus_refs: list[str] = field(default_factory=list)
    # Plus-address tags whose signature is wrong (typed or forged): named in the trace, nothing more.
    forged_plus_refs: list[str] = field(default_factory=list)
    token_refs: list[str] = field(default_factory=list)
    subject_refs: list[str] = field(default_factory=list)
    body_refs: list[str] = field(default_factory=list)
    # (waterline, (text, html)): the body cut ahead for the likely client's waterline.
    cut: tuple[str | None, tuple[str, str | None]] | None = None


@dataclass(frozen=True)
class ReadingSetup:
    """What reading a mailbox's mail needs of its configuration, as plain values that can be
    sent to another process (portal.inbound.context.IngestContext makes it once per run)."""

    secret: bytes
    ref_format: RefFormat
    plus_addressing: str
    max_message_size: int
    mailbox_client_id: int
    waterlines: dict[int, str | None]
    allowed_addresses: dict[str, int]
    allowed_domains: dict[str, int]

    def likely_client(self, sender: str) -> int:
        """The client a sender's mail most often lands with (allow-list, else the mailbox's):
        the body is cut ahead for its waterline, and again only if the decision differs."""
        found = allow_list_match(sender, self.allowed_addresses, self.allowed_domains)
        return found[0] if found is not None else self.mailbox_client_id


def prepare(setup: ReadingSetup, stored: RawMessage) -> Prepared:
    item = examine(setup, stored.raw)
    item.stored = stored
    return item


def examine(setup: ReadingSetup, raw_bytes: bytes | None) -> Prepared:
    """Everything about one message that needs no database."""
    item = Prepared(None)
    if raw_bytes is None:
        return item
    parsed = item.parsed = parse_email(raw_bytes, max_size=setup.max_message_size)
    item.cls = classify(parsed)
    item.fps = fingerprints(raw_bytes, parsed)
    item.sender = (parsed.from_.address if parsed.from_ else "").lower()
    item.thread_ids = [m for m in [parsed.in_reply_to, *reversed(parsed.references),
                                   item.cls.bounce_original_message_id] if m][:100]
    fmt = setup.ref_format
    if setup.plus_addressing in ("mixed", "only"):
        recipients = [a.address for a in (*parsed.to, *parsed.cc, *parsed.bcc)]
        recipients += [v for k, v in parsed.headers if k.lower() in _ENVELOPE_HEADERS]
        tags = fmt.plus_tags(recipients, setup.secret)
        item.plus_refs = [ref for ref, signed in tags if signed]
        item.forged_plus_refs = [ref for ref, signed in tags if not signed]
    item.token_refs = (fmt.refs_in_tokens(parsed.text, setup.secret)
                       or fmt.refs_in_tokens(parsed.html or "", setup.secret))
    item.subject_refs = fmt.refs_in_subject(parsed.subject)
    item.body_refs = fmt.refs_in_body(parsed.text)
    waterline = setup.waterlines.get(setup.likely_client(item.sender))
    item.cut = (waterline, visible_body(parsed, waterline))
    return item


def examine_all(setup: ReadingSetup, messages: list[tuple[int, bytes | None]]) -> dict[int, Prepared]:
    """A batch, (raw id, bytes), read: the messages that could be read, by raw id."""
    examined = {}
    for stored_id, raw_bytes in messages:
        try:
            examined[stored_id] = examine(setup, raw_bytes)
        except Exception:  # noqa: BLE001 - read again inside decide_batch, where a failure is handled
            continue
    return examined


def visible_body(parsed: ParsedEmail, waterline: str | None) -> tuple[str, str | None]:
    """(text, sanitised HTML) the sender newly wrote, cut at the waterline or our marker."""
    waterlines = [w for w in (waterline, REPLY_MARKER) if w]
    visible = cut_body(parsed.text, parsed.html, waterlines=waterlines, marker=REPLY_MARKER)
    return visible.text, sanitize_html(visible.html) if visible.html is not None else None

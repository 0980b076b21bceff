"""Mail pushed by the MSP's own MTA over LMTP (DESIGN step 1 for `protocol: lmtp` mailboxes).

The listener (workers.lmtp) speaks the protocol; this module decides, per recipient, which
mailbox takes the mail, and keeps the raw bytes the way a fetch keeps them: stored and COMMITTED
before the recipient gets its 250. The server id is the message's sha256, so the same bytes
pushed again (the MTA retrying after a lost 250) are found and not stored twice. Deciding is the
fetch job's, queued after the commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import literal, select
from sqlalchemy.dialects import postgresql, sqlite

from portal.extensions import db
from portal.inbound.fetch import raw_row_values
from portal.inbound.health import fetch_options
from portal.jobs import app_redis, dispatch_pending, enqueue
from portal.mail.parse import DEFAULT_MAX_SIZE
from portal.models import Mailbox, RawMessage

FOLDER = "LMTP"  # the raw rows' folder: one "folder" per mailbox, its server ids are sha256 sums
UIDVALIDITY = 0

# Reply texts. One text for every recipient no active LMTP mailbox takes: another MSP's mailbox,
# a draft or a disabled one all read "unknown recipient".
UNKNOWN = "550 5.1.1 Unknown recipient"
TRY_LATER = "451 4.3.0 Temporarily unable to accept the message, try again later"
TOO_BIG = "552 5.3.4 Message too big for this mailbox"
DELIVERED = "250 2.0.0 Delivered"
ACCEPTED = "250 2.1.5 Recipient OK"


@dataclass(frozen=True)
class Recipient:
    """An RCPT the listener accepted: the address as given and the mailbox that takes it."""

    address: str
    mailbox_id: int
    msp_id: int
    max_size: int

    @property
    def id(self) -> int:  # what the raw row's values read as the mailbox's id
        return self.mailbox_id


def base_address(address: str, plus_mode: str) -> str:
    """The address a mailbox answers to: `support+T-1042.k3f9q@x` is `support@x` when the
    mailbox reads plus addresses (mixed, only); with plus addressing off the tag is part of it."""
    if plus_mode == "off" or "+" not in address:
        return address
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def recipient_mailbox(address: str) -> Mailbox | None:
    """The active incoming LMTP mailbox this address (or alias, any case) names. Its primary
    address wins over another's alias; among equals the oldest mailbox."""
    wanted = (address or "").strip().strip("<>").lower()
    if "@" not in wanted:
        return None
    found: list[tuple[int, int, Mailbox]] = []
    for mailbox in db.session.scalars(select(Mailbox).where(Mailbox.protocol == "lmtp", Mailbox.status == "active",
                                                            Mailbox.direction != "outgoing")):
        key = base_address(wanted, mailbox.plus_addressing)
        if key == mailbox.address.lower():
            found.append((0, mailbox.id, mailbox))
        elif key in (a.lower() for a in mailbox.aliases or []):
            found.append((1, mailbox.id, mailbox))
    return min(found, key=lambda f: f[:2])[2] if found else None


def accept_recipient(address: str) -> Recipient | None:
    mailbox = recipient_mailbox(address)
    if mailbox is None:
        return None
    return Recipient(address, mailbox.id, mailbox.msp_id, mailbox.max_message_size or DEFAULT_MAX_SIZE)


def redis_reachable() -> None:
    """Raises when Redis does not answer: then nothing is stored (the MTA keeps the mail)."""
    app_redis().ping()


def keep_many(deliveries: list[tuple[Recipient, bytes, datetime]]) -> list[bool | LookupError]:
    """Store and commit the messages of one or more connections, one transaction and one commit
    for all of them, then queue each mailbox's deciding once. Per delivery: True stored, False
    these exact bytes stored for that mailbox before (a retry: nothing new, still answered 250),
    or the LookupError of a mailbox deleted after RCPT. Raises on any database or Redis failure,
    with nothing of any of them committed."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stored = []
    for recipient, raw_bytes, received_at in deliveries:
        sha = hashlib.sha256(raw_bytes).hexdigest()
        values = raw_row_values(recipient, raw_bytes, sha, FOLDER, UIDVALIDITY, None, received_at)
        # One statement: stored only while the mailbox exists (SQLite enforces no foreign keys
        # here), and not again when a retry stored these bytes before (the raw rows' unique key,
        # which also settles a retry racing its first try on another connection).
        columns = list(values)
        row = select(*(literal(values[c], type_=RawMessage.__table__.c[c].type) for c in columns)).where(
            Mailbox.id == recipient.mailbox_id)
        # SQLAlchemy keeps an INSERT's rowcount only when asked (on PostgreSQL it read -1, so
        # every new message was taken for a retry and its mailbox looked up again).
        done = db.session.execute(insert(RawMessage.__table__).from_select(columns, row).on_conflict_do_nothing(
            index_elements=["mailbox_id", "folder", "uidvalidity", "server_id"]).execution_options(
            preserve_rowcount=True))
        stored.append(done.rowcount == 1)
    db.session.commit()  # the bytes are safe: only now may the MTA hear 250
    outcomes: list[bool | LookupError] = []
    for (recipient, _raw, _at), new in zip(deliveries, stored):
        if not new and db.session.get(Mailbox, recipient.mailbox_id) is None:
            outcomes.append(LookupError(f"mailbox {recipient.mailbox_id} was deleted after RCPT"))
        else:
            outcomes.append(new)
    # Deciding is the fetch job's (it decides what is stored and new); a job already queued or
    # running takes this one too. Queued for a retry as well: its first try may have failed here.
    kept = dict.fromkeys(r.mailbox_id for (r, _raw, _at), o in zip(deliveries, outcomes) if not isinstance(o, Exception))
    for mailbox_id in kept:
        enqueue("workers.fetch.fetch_mailbox", mailbox_id, options=fetch_options(mailbox_id))
    dispatch_pending()  # sent now, not at a commit: the retry of known bytes commits nothing
    return outcomes

"""Looking up a batch's worth of values (hundreds of ids, fingerprints, addresses) in one column,
and what one batch knows (BatchLookups): the lookups its messages need, made in a few queries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import ARRAY, any_, bindparam, select, union_all
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.elements import ColumnElement

from portal.extensions import db
from portal.inbound.read import Prepared
from portal.mail.fingerprint import Fingerprints
from portal.models import Contact, Message, Ticket

# SQLite's default limit is 32,766 bound parameters; a chunk stays far below it.
CHUNK = 500
_FP_KINDS = (("raw", "the same raw message"), ("content", "the same content"), ("envelope", "the same envelope"))


def one_of(column, values: Iterable) -> Iterator[ColumnElement[bool]]:
    """Conditions that together select the rows whose `column` holds one of `values`: run one
    query per condition. PostgreSQL takes the whole list as one array parameter: the statement
    reads the same whatever the list's length, so it is parsed, planned and prepared once per
    connection, where `IN` with a parameter per value is compiled, sent and planned anew for
    every length. SQLite gets `IN` over chunks."""
    values = list(values)
    if not values:
        return
    if db.session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(None, values, type_=ARRAY(column.type)))
        return
    for chunk in chunks(values):
        yield column.in_(chunk)


def chunks(values: list, size: int = CHUNK) -> Iterator[list]:
    """`values` in slices of at most `size`, for statements that take one parameter per value."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


@dataclass
class KnownMessage:
    ticket: Ticket
    direction: str
    automatic: bool


class BatchLookups:
    """What one batch of one mailbox knows: every lookup its messages need, made in a handful of
    queries before they are decided (load), and what the batch has decided so far (remember), so
    that a reply finds a ticket created earlier in the same batch."""

    def __init__(self, msp_id: int, mailbox_id: int):
        self.msp_id, self.mailbox_id = msp_id, mailbox_id
        self.reset()

    def reset(self) -> None:
        self.own_ids: set[str] = set()
        self.first_by_fp: dict[tuple[str, str], int | Message] = {}
        self.by_message_id: dict[str, KnownMessage] = {}
        self.tickets_by_ref: dict[str, Ticket] = {}
        self.contacts: dict[str, Contact] = {}
        self.existing: dict[int, Message] = {}

    def load(self, items: list[Prepared]) -> None:
        """Every lookup the batch needs, in a handful of queries instead of several per message."""
        msp_id, mailbox_id = self.msp_id, self.mailbox_id
        stored_ids = [i.stored.id for i in items if i.stored.id is not None]
        for condition in one_of(Message.raw_message_id, stored_ids):
            for m in db.session.scalars(select(Message).where(condition)):
                self.existing[m.raw_message_id] = m
        parsed = [i for i in items if i.parsed is not None]
        mids = sorted({i.parsed.message_id for i in parsed if i.parsed.message_id})
        for condition in one_of(Message.message_id, mids):
            self.own_ids.update(db.session.scalars(select(Message.message_id).where(
                Message.msp_id == msp_id, Message.direction == "out", condition)))
        self._load_first_copies(parsed, mailbox_id, stored_ids)
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

    def _load_first_copies(self, parsed: list[Prepared], mailbox_id: int, stored_ids: list[int]) -> None:
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
                    part = part.where(Message.raw_message_id.is_(None) | Message.raw_message_id.not_in(stored_ids))
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
                select(Ticket).where(Ticket.msp_id == self.msp_id, Ticket.reference == ref))
        return self.tickets_by_ref[ref]

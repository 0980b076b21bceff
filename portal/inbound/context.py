"""What deciding one mailbox's mail needs, gathered once per run: the MSP's tree and its
configuration (IngestContext), the ticket-number counter (TicketNumbers), and per batch what
the batch looked up and decided (portal.inbound.lookups.BatchLookups) and how it is written
(portal.inbound.write.BatchWriter).

The configuration is read when the context is made, never through the rows afterwards: the
reading thread (portal.inbound.read.examine) uses it and must not load.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import select, update

from portal import tenancy
from portal.extensions import db
from portal.inbound.lookups import BatchLookups
from portal.inbound.read import Prepared, ReadingSetup
from portal.inbound.write import BatchWriter
from portal.mail.parse import DEFAULT_MAX_SIZE
from portal.mail.refs import RefFormat
from portal.mail.route import RouteRule
from portal.models import AllowEntry, Client, Mailbox, Route
from portal.services.clients import tree_clients
from portal.services.custom_fields import extraction_setup


class TicketNumbers:
    """Ticket numbers come from the MSP's counter, locked for the rest of the transaction by an
    UPDATE on first use, then counted here and written back by save()."""

    def __init__(self, msp_id: int, ref_format: RefFormat):
        self.msp_id, self.ref_format = msp_id, ref_format
        self.reset()

    def reset(self) -> None:
        self._number: int | None = None
        self._number_saved: int | None = None

    def next_reference(self) -> tuple[int, str]:
        self.lock()
        self._number += 1
        return self._number, self.ref_format.ref(self._number)

    def lock(self) -> None:
        """Take the counter's lock now (it is held until the transaction ends): whoever else
        would create a ticket for this MSP waits (portal.inbound.alerts reads under it)."""
        if self._number is None:
            self._number = db.session.execute(
                update(Client).where(Client.id == self.msp_id)
                .values(last_ticket_number=Client.last_ticket_number)
                .returning(Client.last_ticket_number)
            ).scalar_one()

    def save(self) -> None:
        if self._number is not None and self._number != self._number_saved:
            db.session.execute(update(Client).where(Client.id == self.msp_id)
                               .values(last_ticket_number=self._number))
            self._number_saved = self._number


class RouteTestCounts:
    """How often each route in test would have taken mail: counted as a batch is decided, and
    added by save() in the batch's transaction with UPDATE … SET test_hits = test_hits + n, never
    read and written back, so that runs deciding at the same time lose no count."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()

    def reset(self) -> None:
        self._counts.clear()

    def add(self, route_id: int) -> None:
        self._counts[route_id] += 1

    def save(self) -> None:
        by_count: dict[int, list[int]] = defaultdict(list)
        for route_id, count in self._counts.items():
            by_count[count].append(route_id)
        for count, route_ids in by_count.items():
            db.session.execute(update(Route).where(Route.id.in_(route_ids))
                               .values(test_hits=Route.test_hits + count)
                               .execution_options(synchronize_session=False))
        self._counts.clear()


class AllowLists:
    """The allow-list entries of the mailbox's client and its sub-clients (`clients`: the MSP's
    tree), value → client id, addresses apart from domains; `msp_addresses` and `msp_domains`
    hold the whole MSP tree's, for a mailbox that accepts only allowed senders."""

    def __init__(self, mailbox: Mailbox, clients: list[Client]):
        subtree = {mailbox.client_id} | tenancy.descendant_ids(clients, mailbox.client_id)
        self.allowed_addresses: dict[str, int] = {}
        self.allowed_domains: dict[str, int] = {}
        self.msp_addresses: dict[str, int] = {}
        self.msp_domains: dict[str, int] = {}
        for entry in db.session.scalars(select(AllowEntry).where(AllowEntry.msp_id == mailbox.msp_id)):
            (self.msp_addresses if entry.kind == "address" else self.msp_domains)[entry.value] = entry.client_id
            if entry.client_id in subtree:
                target = self.allowed_addresses if entry.kind == "address" else self.allowed_domains
                target[entry.value] = entry.client_id


class IngestContext:
    """What the messages of one mailbox need: configuration loaded once, lookups made once
    per batch (preload, into `known`), the ticket counter (`numbers`) and the batch's
    writer (`writer`)."""

    def __init__(self, mailbox: Mailbox, secret: bytes, host: str | None = None):
        self.mailbox = mailbox
        self.secret = secret
        self.host = host  # ours in the X-Tidemark-Loop header
        clients = tree_clients(mailbox.msp_id)
        self.clients = {c.id: c for c in clients}
        self.msp = self.clients[mailbox.msp_id]
        self.ref_format = RefFormat(prefix=self.msp.reference_prefix or "T")
        self.plus_addressing = mailbox.plus_addressing
        self.mailbox_client_id = mailbox.client_id
        self._waterlines = {cid: self._effective_waterline(cid) for cid in self.clients}
        self.addresses = {a.lower() for a in mailbox.addresses}
        self.mailbox_priority = mailbox.default_priority or "normal"
        self.rules = [
            RouteRule(r.id, r.name, r.client_id, tuple(r.recipients), tuple(r.senders), tuple(r.subject_keywords),
                      tuple(r.attachment_types), r.high_importance_only, r.fallback, r.enabled, r.test_mode,
                      self.clients[r.client_id].name if r.client_id in self.clients else "", r.default_priority)
            for r in mailbox.routes
        ]
        self.routes_by_id = {r.id: r for r in mailbox.routes}
        # What routes' extraction rules may fill (portal.inbound.extract), read only if one has rules.
        self.extraction = extraction_setup(mailbox.msp_id) if any(r.extraction_rules for r in mailbox.routes) \
            else None
        lists = AllowLists(mailbox, clients)
        self.allowed_addresses, self.allowed_domains = lists.allowed_addresses, lists.allowed_domains
        self.accept_only_allowed = mailbox.accept_only_allowed
        self.msp_addresses, self.msp_domains = lists.msp_addresses, lists.msp_domains
        self.max_message_size = mailbox.max_message_size or DEFAULT_MAX_SIZE
        # Plain values, not the rows: examine() runs in another thread or process and must not load.
        self.reading = ReadingSetup(
            secret=secret, ref_format=self.ref_format, plus_addressing=self.plus_addressing,
            max_message_size=self.max_message_size, mailbox_client_id=self.mailbox_client_id,
            waterlines=self._waterlines, allowed_addresses=self.allowed_addresses,
            allowed_domains=self.allowed_domains)
        self.known = BatchLookups(mailbox.msp_id, mailbox.id)
        self.numbers = TicketNumbers(mailbox.msp_id, self.ref_format)
        # Saved only where mail is ingested (portal.inbound.batch): a check or a re-run counts nothing.
        self.route_tests = RouteTestCounts()
        self.writer = BatchWriter()
        # Here, not at the top: the alert step uses the ticket steps, which use this module.
        from portal.inbound.alerts import AlertLookups  # noqa: PLC0415

        self.alerts = AlertLookups(mailbox.msp_id, mailbox.routes)

    # --- configuration -----------------------------------------------------------------------

    def disabled(self, client_id: int) -> bool:
        return tenancy.disabled_by(tenancy.lineage_in(client_id, self.clients)) is not None

    def waterline(self, client_id: int) -> str | None:
        return self._waterlines.get(client_id)

    def _effective_waterline(self, client_id: int) -> str | None:
        return tenancy.inherited(tenancy.lineage_in(client_id, self.clients), "waterline")

    def client_allows(self, client_id: int, sender: str) -> bool:
        return any(claimant == client_id
                   for claimant, _ in tenancy.allow_list_claims(sender, self.allowed_addresses, self.allowed_domains))

    # --- one batch -----------------------------------------------------------------------------

    def preload(self, items: list[Prepared]) -> None:
        """A new batch: every lookup it needs, in a handful of queries instead of several per
        message; the counter is locked and read again at its first ticket."""
        self.forget_batch()
        self.known.load(items)
        self.alerts.load(items, self.numbers.lock)

    def forget_batch(self) -> None:
        """After a rollback nothing the batch remembered is true any more."""
        self.known.reset()
        self.alerts.reset()
        self.numbers.reset()
        self.route_tests.reset()
        self.writer.reset()

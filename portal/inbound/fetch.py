"""Fetching a mailbox without losing or doubling a single email (DESIGN step 1).

Order for every batch: raw bytes stored and COMMITTED → the server's after-processing action
(seen / move / delete) → each message decided in its own savepoint. A crash anywhere leaves
either mail on the server we have not stored yet, or stored mail whose server action or decision
is still to do; the next run finishes that work first. Nothing is stored twice: the raw row is
unique per (mailbox, folder, UIDVALIDITY, server id).

The caller passes `commit`, so a job commits where this module says and tests can interrupt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select, text, update
from sqlalchemy.orm import undefer

from portal import faults
from portal.extensions import db
from portal.inbound import reading
from portal.inbound.batch import decide_batch, decide_one
from portal.inbound.context import IngestContext
from portal.inbound.decide import IngestResult
from portal.inbound.health import in_skip_window, record_failure, record_success
from portal.inbound.lookups import one_of
from portal.inbound.read import examine_all
from portal.inbound.write import insert_rows
from portal.mail.parse import DEFAULT_MAX_SIZE
from portal.models import FolderState, Mailbox, RawMessage
from portal.models.base import utcnow
from portal.services.mailboxes import ADDRESS_CLAIMED, claimed_elsewhere, server_settings
from portal.transport.base import TransportError

log = logging.getLogger(__name__)

BATCH_SIZE = 200


@dataclass
class FetchReport:
    mailbox_id: int
    fetched: int = 0
    decided: int = 0
    failed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None


# --- one writer per mailbox -----------------------------------------------------------------------

# The namespace of our advisory locks on PostgreSQL (the second number is the mailbox id).
_MAILBOX_LOCK = 0x7464


def hold_mailbox(mailbox: Mailbox) -> None:
    """Until this transaction ends, nobody else stores or decides this mailbox's mail: a second
    fetch (the Redis lock gone, as after a Redis restart) waits here, then reads what the first
    one committed. PostgreSQL: a transaction-scoped advisory lock on the mailbox id (a row lock
    would also stop every insert that names the mailbox). SQLite: a write, which takes the
    database's single write lock before anything after it is read."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": _MAILBOX_LOCK, "id": mailbox.id})
    else:
        db.session.execute(text("UPDATE mailboxes SET id = id WHERE id = :id"), {"id": mailbox.id})


# --- storing ---------------------------------------------------------------------------------------


def raw_row_values(mailbox, raw_bytes: bytes | None, server_id: str, folder: str, uidvalidity: int,
                   size: int | None, received_at: datetime | None = None) -> dict:
    """A raw row's values; `mailbox` is anything with the mailbox's `id` and `msp_id` (a Mailbox,
    an LMTP recipient)."""
    return dict(msp_id=mailbox.msp_id, mailbox_id=mailbox.id, folder=folder, uidvalidity=uidvalidity,
                server_id=server_id[:255], raw=raw_bytes, size=len(raw_bytes) if raw_bytes is not None else (size or 0),
                sha256=hashlib.sha256(raw_bytes or b"").hexdigest(), received_at=as_utc(received_at))


def as_utc(when: datetime | None) -> datetime | None:
    """A server's receive time in UTC; a naive one (a server that gave no zone) is taken as UTC."""
    if when is None:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def store_raw(mailbox: Mailbox, raw_bytes: bytes | None, *, server_id: str, folder: str = "", uidvalidity: int = 0,
              size: int | None = None, received_at: datetime | None = None) -> RawMessage:
    """Keep one fetched message byte for byte (bytes None: over the size limit, kept as a record)."""
    stored = RawMessage(**raw_row_values(mailbox, raw_bytes, server_id, folder, uidvalidity, size, received_at))
    db.session.add(stored)
    return stored


def ingest_given(ctx: IngestContext, raw_bytes: bytes, *, server_id: str, folder: str) -> tuple[RawMessage, IngestResult | None]:
    """Mail handed over rather than fetched (`flask mail ingest`, the demo's samples): kept as a
    fetch keeps it, then decided alone, once (None: deciding it failed; the error is on the row)."""
    stored = store_raw(ctx.mailbox, raw_bytes, server_id=server_id, folder=folder)
    db.session.flush()
    return stored, decide_one(stored, ctx, max_tries=1)


def store_raw_batch(mailbox: Mailbox, fetched: Iterable, *, folder: str, uidvalidity: int = 0) -> int:
    """Keep a fetched batch byte for byte in one go (no objects: deciding loads them again)."""
    rows = [raw_row_values(mailbox, f.raw, f.server_id, folder, uidvalidity, f.size, f.internal_date) for f in fetched]
    insert_rows(db.session, RawMessage.__table__, rows)
    return len(rows)


def in_folder(mailbox: Mailbox, folder: str, uidvalidity: int) -> tuple:
    """The conditions for the raw rows of one folder under one UIDVALIDITY."""
    return RawMessage.mailbox_id == mailbox.id, RawMessage.folder == folder, RawMessage.uidvalidity == uidvalidity


def known_server_ids(mailbox: Mailbox, folder: str, uidvalidity: int, among: Iterable[str] | None = None) -> set[str]:
    """Server ids already stored; `among` limits the question to a batch (a big mailbox's
    whole history is not read once per batch)."""
    query = select(RawMessage.server_id).where(*in_folder(mailbox, folder, uidvalidity))
    if among is None:
        return set(db.session.scalars(query))
    found: set[str] = set()
    for condition in one_of(RawMessage.server_id, among):
        found.update(db.session.scalars(query.where(condition)))
    return found


# Only the columns the batch lookups filter on: analysing the bodies and raw bytes would cost
# seconds and tell the planner nothing it uses.
_LOOKUP_COLUMNS = {
    "raw_messages": "(mailbox_id, folder, uidvalidity, server_id, state)",
    "messages": "(msp_id, mailbox_id, ticket_id, raw_message_id, direction, message_id, fp_raw, fp_content, fp_envelope)",
}


def refresh_statistics() -> None:
    """PostgreSQL plans its queries by table statistics, which autovacuum refreshes about once a
    minute. A first fetch of a big mailbox grows raw_messages and messages a hundredfold within
    that minute, and plans made for near-empty tables then read the whole mailbox for every
    batch's lookups (measured at 10,000 messages: 55 ms a query instead of 0.5 ms). So a table
    that has grown by more than half since it was last analysed is analysed now, in the
    caller's transaction: a few times, at geometric sizes, during a big import."""
    if db.session.get_bind().dialect.name != "postgresql":
        return
    # pg_class.reltuples is the row count the last ANALYZE saw (-1: never analysed).
    stale = db.session.scalars(text(
        "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.relname IN ('raw_messages', 'messages', 'tickets', 'contacts')"
        " AND s.n_live_tup > 1000 + 1.5 * greatest(c.reltuples, 0)")).all()
    for table in stale:
        db.session.execute(text(f"ANALYZE {table} {_LOOKUP_COLUMNS.get(table, '')}"))


# --- deciding what is stored, reading ahead -------------------------------------------------------


def pending(mailbox: Mailbox, limit: int, *, after: int = 0, with_bytes: bool = True) -> list[RawMessage]:
    query = (select(RawMessage).where(RawMessage.mailbox_id == mailbox.id, RawMessage.state == "new",
                                      RawMessage.id > after)
             .order_by(RawMessage.id).limit(limit))
    if with_bytes:
        # The bytes come with the rows: loading a deferred column one message at a time costs a query each.
        query = query.options(undefer(RawMessage.raw))
    return list(db.session.scalars(query))


def decide_pending(mailbox: Mailbox, secret: bytes, commit: Callable[[], None], *, batch: int = BATCH_SIZE,
                   report: FetchReport | None = None, host: str | None = None) -> FetchReport:
    """Decide every stored message still new, a batch at a time, in the order they came."""
    report = report or FetchReport(mailbox.id)
    with Decider(mailbox, secret, commit, report=report, batch=batch, host=host) as decider:
        decider.finish()
    return report


class Decider:
    """Decides stored batches in the order they were stored. A batch handed in is read first
    (parsed, classified, fingerprinted, cut for the likely client's waterline), then decided
    and committed once `ahead` younger batches are being read, or at finish().

    A worker reads in its reading process (portal.inbound.reading), two batches ahead, on both
    databases. Elsewhere, PostgreSQL reads in a thread, two batches ahead: it fills the time the
    caller waits on the mail server (fetching the next batch) and on the database (writing this
    one). SQLite then reads in place: its many short calls each give the GIL up and must win it
    back from a reading thread, which made the whole run 10-15% slower (measured, 2,000 messages)."""

    def __init__(self, mailbox: Mailbox, secret: bytes, commit: Callable[[], None], *, report: FetchReport,
                 batch: int = BATCH_SIZE, host: str | None = None):
        self.mailbox, self.commit, self.report, self.batch = mailbox, commit, report, batch
        self.ctx = IngestContext(mailbox, secret, host)
        self._own_reader = None  # a thread pool this Decider started, and shuts down
        self._reader = reading.reader()
        if self._reader is None and db.session.get_bind().dialect.name == "postgresql":
            self._reader = self._own_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="examine")
        self._ahead = 1 if self._reader is None else 2
        self._reader = self._reader or _InPlace()
        self._reading: deque[tuple[int, int, Future]] = deque()  # first and last raw id, the reading
        self._handed = 0  # the last raw id handed in: this run decides nothing at or below it again
        self._tried: set[int] = set()  # raw ids this run has decided or tried to (failures wait for the next run)

    def __enter__(self) -> "Decider":
        return self

    def __exit__(self, *exc) -> None:
        # After a failure, batches not yet read are not read (the reading process goes on serving).
        for _first, _last, waiting in self._reading:
            waiting.cancel()
        if self._own_reader is not None:
            self._own_reader.shutdown(cancel_futures=True)

    def hand(self, messages: list[tuple[int, bytes | None]]) -> None:
        """A stored and committed batch, (raw id, bytes) in id order: start reading it, and
        decide the oldest batch handed in if more than `ahead` are waiting."""
        if messages:
            self._reading.append((messages[0][0], messages[-1][0],
                                  self._reader.submit(examine_all, self.ctx.reading, messages)))
            self._handed = messages[-1][0]
        while len(self._reading) > self._ahead:
            self._decide(*self._reading.popleft())

    def finish(self) -> None:
        """Decide what was handed in, then every message stored after it and still new (left by
        an earlier run, or stored without being handed in). Messages that failed in this run
        wait for the next one."""
        # The bytes come with the rows, and are handed on before the commit that would expire them.
        while batch := pending(self.mailbox, self.batch, after=self._handed):
            self.hand([(stored.id, stored.raw) for stored in batch])
        while self._reading:
            self._decide(*self._reading.popleft())

    def _decide(self, first: int, last: int, waiting: Future) -> None:
        examined = reading.result_or_none(waiting)
        # Under the mailbox's lock, the same rows again, fresh: a racing run may have decided
        # them meanwhile, and then they are not decided a second time. Older rows a racing run
        # stored and has not decided yet go first: a reply must find its root's ticket.
        hold_mailbox(self.mailbox)
        batch = [stored for stored in db.session.scalars(select(RawMessage).where(
                     RawMessage.mailbox_id == self.mailbox.id, RawMessage.state == "new",
                     RawMessage.id <= last).order_by(RawMessage.id))
                 if stored.id >= first or stored.id not in self._tried]
        self._tried.update(stored.id for stored in batch)
        for result in decide_batch(batch, self.ctx, examined):
            if result is None:
                self.report.failed += 1
            else:
                self.report.decided += 1
                self.report.outcomes[result.outcome] = self.report.outcomes.get(result.outcome, 0) + 1
        faults.reached("mid-decide")
        refresh_statistics()
        self.commit()


class _InPlace:
    """The executor interface, doing the work at once in this thread."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


# --- fetching --------------------------------------------------------------------------------------


def fetch_imap(mailbox: Mailbox, session, commit: Callable[[], None], *, decider: Decider, batch: int = BATCH_SIZE,
               max_size: int = DEFAULT_MAX_SIZE, report: FetchReport) -> None:
    """Each batch: downloaded (in a thread, while the batch before is handled), stored,
    committed, handed to the decider, and only then the server told."""
    for folder in mailbox.folders:
        folder_state = session.select(folder)
        hold_mailbox(mailbox)  # until the commit below: a racing fetch must not add the folder too
        state_row = db.session.scalar(select(FolderState).where(FolderState.mailbox_id == mailbox.id,
                                                                FolderState.folder == folder))
        if state_row is None or state_row.uidvalidity != folder_state.uidvalidity:
            if state_row is not None:
                log.warning("%s %s: UIDVALIDITY changed %s → %s; fetching again, fingerprints catch copies",
                            mailbox.address, folder, state_row.uidvalidity, folder_state.uidvalidity)
                db.session.delete(state_row)
                db.session.flush()
            state_row = FolderState(mailbox_id=mailbox.id, folder=folder, uidvalidity=folder_state.uidvalidity, last_uid=0)
            db.session.add(state_row)
        commit()
        _finish_server_actions(mailbox, session, folder, folder_state.uidvalidity, commit)
        uids = session.uids_after(state_row.last_uid, since=mailbox.sync_start_date)
        chunks = [uids[start:start + batch] for start in range(0, len(uids), batch)]
        # Each batch is downloaded in a thread while the one before is stored, committed and
        # decided: the waits on the mail server and imapclient's parsing overlap the database
        # work. The lock keeps to one command at a time on the connection.
        lock = threading.Lock()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="download") as downloader:
            download = downloader.submit(_download, session, lock, chunks[0], batch, max_size) if chunks else None
            for i, chunk in enumerate(chunks):
                fetched = download.result()
                faults.reached("after-fetch")
                if i + 1 < len(chunks):
                    download = downloader.submit(_download, session, lock, chunks[i + 1], batch, max_size)
                hold_mailbox(mailbox)  # until the commit: a racing fetch stores none of these again
                known = known_server_ids(mailbox, folder, folder_state.uidvalidity, among=[str(u) for u in chunk])
                fetched = [f for f in fetched if f.server_id not in known]
                report.fetched += store_raw_batch(mailbox, fetched, folder=folder, uidvalidity=folder_state.uidvalidity)
                state_row.last_uid = max(state_row.last_uid, chunk[-1])
                refresh_statistics()
                commit()  # the bytes are safe: only now may the server be told
                faults.reached("after-commit")
                raw_by_server_id = {f.server_id[:255]: f.raw for f in fetched}
                decider.hand(stored_batch(mailbox, folder, folder_state.uidvalidity, raw_by_server_id))
                # Told after the decisions the hand-over made: by then the next download is done.
                with lock:
                    _finish_server_actions(mailbox, session, folder, folder_state.uidvalidity, commit)


def _download(session, lock: threading.Lock, uids: list[int], batch: int, max_size: int) -> list:
    with lock:
        return list(session.fetch(uids, batch_size=batch, max_bytes=max_size))


def stored_batch(mailbox: Mailbox, folder: str, uidvalidity: int,
                  raw_by_server_id: dict[str, bytes | None]) -> list[tuple[int, bytes | None]]:
    """(raw id, bytes) in id order of the messages just stored, by their server ids."""
    rows = [row for condition in one_of(RawMessage.server_id, raw_by_server_id) for row in db.session.execute(
        select(RawMessage.id, RawMessage.server_id).where(*in_folder(mailbox, folder, uidvalidity), condition))]
    return sorted((stored_id, raw_by_server_id[server_id]) for stored_id, server_id in rows)


def _finish_server_actions(mailbox: Mailbox, session, folder: str, uidvalidity: int, commit) -> None:
    """Tell the server about every stored message it has not been told of."""
    rows = db.session.execute(select(RawMessage.id, RawMessage.server_id).where(
        *in_folder(mailbox, folder, uidvalidity), RawMessage.server_done.is_(False))).all()
    if not rows:
        return
    uids = [int(r.server_id) for r in rows]
    faults.reached("before-server-action")
    if mailbox.after_action == "move" and mailbox.processed_folder:
        session.ensure_folder(mailbox.processed_folder)
        session.move(uids, mailbox.processed_folder)
    elif mailbox.after_action == "delete":
        session.delete(uids)
    else:
        session.mark_seen(uids)
    for condition in one_of(RawMessage.__table__.c.id, [r.id for r in rows]):
        # One statement, not one per row; the commit below expires any loaded rows.
        db.session.execute(update(RawMessage.__table__).where(condition).values(server_done=True))
    commit()


def fetch_pop3(mailbox: Mailbox, session, commit: Callable[[], None], *, max_size: int = DEFAULT_MAX_SIZE,
               report: FetchReport) -> None:
    folder = "INBOX"
    known = known_server_ids(mailbox, folder, 0)
    listing = session.listing()
    delete_after = mailbox.after_action == "delete"
    for number, uidl, size in listing:
        if uidl in known:
            continue
        raw_bytes = session.retrieve(number) if size <= max_size else None
        store_raw(mailbox, raw_bytes, server_id=uidl, folder=folder, size=size)
        report.fetched += 1
        known.add(uidl)
        if report.fetched % BATCH_SIZE == 0:
            commit()
    commit()  # everything retrieved is stored before any deletion is even marked
    if delete_after:
        waiting = set(db.session.scalars(select(RawMessage.server_id).where(
            RawMessage.mailbox_id == mailbox.id, RawMessage.folder == folder, RawMessage.server_done.is_(False))))
        for number, uidl, _size in listing:
            if uidl in waiting:
                session.delete(number)
    # Deletions take effect at QUIT, when the session closes cleanly; marked done only then.


def mark_pop3_done(mailbox: Mailbox) -> None:
    db.session.execute(update(RawMessage.__table__).where(
        RawMessage.__table__.c.mailbox_id == mailbox.id, RawMessage.__table__.c.server_done.is_(False))
        .values(server_done=True))


def _login_settings(mailbox: Mailbox, keys: str, ca_file: str | None, commit: Callable[[], None]):
    """The server settings, committed at once: a refreshed OAuth2 grant (its rotated refresh token,
    which the provider may already refuse in its old form), or its "reconnect needed", must
    outlive the rollback of a login or fetch that fails afterwards."""
    try:
        settings = server_settings(mailbox, keys, ca_file)
    except TransportError:
        commit()
        raise
    commit()
    return settings


def run_fetch(mailbox: Mailbox, *, open_session: Callable, keys: str, secret: bytes, commit: Callable[[], None],
              ca_file: str | None = None, now: datetime | None = None, max_size: int | None = None,
              batch: int = BATCH_SIZE, host: str | None = None, scheduled: bool = True) -> FetchReport:
    """One poll of one mailbox: fetch what is new, tell the server, decide everything stored.
    `scheduled` False: a person asked for it now (`flask mail fetch`), skip windows do not hold it.
    Mail larger than the mailbox's largest message (else `max_size`, else the installation's
    40 MB) is kept without its bytes and shown as unprocessed."""
    now = now or utcnow()
    max_size = mailbox.max_message_size or max_size or DEFAULT_MAX_SIZE
    report = FetchReport(mailbox.id)
    if mailbox.status != "active":
        report.skipped = f"mailbox is {mailbox.status}"
        return report
    if not mailbox.fetches:
        report.skipped = "mailbox is outgoing only"
        return report
    if mailbox.protocol == "lmtp":
        # Its mail is pushed (portal.inbound.lmtp) and stored already: a "fetch" decides it.
        decide_pending(mailbox, secret, commit, batch=batch, report=report, host=host)
        record_success(mailbox, now)
        commit()
        return report
    window = in_skip_window(mailbox, now) if scheduled else None
    if window:
        report.skipped = f"inside the skip window {window}"
        return report
    with Decider(mailbox, secret, commit, report=report, batch=batch, host=host) as decider:
        decider.finish()  # mail stored by an earlier run goes first, in the order it came
        try:
            with open_session(_login_settings(mailbox, keys, ca_file, commit)) as session:
                # A mailbox activated before it reached its server was not refused (that answer
                # would tell anyone whether an address is fetched); its first login is the check.
                if mailbox.last_success_at is None and claimed_elsewhere(mailbox):
                    raise TransportError("auth", ADDRESS_CLAIMED, transient=False)
                if mailbox.protocol == "pop3":
                    fetch_pop3(mailbox, session, commit, max_size=max_size, report=report)
                elif mailbox.protocol == "graph":
                    # fetch_graph builds on this module's storing helpers: imported here, not at the top.
                    from portal.inbound.fetch_graph import fetch_graph

                    fetch_graph(mailbox, session, commit, decider=decider, max_size=max_size, report=report)
                else:
                    fetch_imap(mailbox, session, commit, decider=decider, batch=batch, max_size=max_size,
                               report=report)
            if mailbox.protocol == "pop3":
                mark_pop3_done(mailbox)  # the clean QUIT above made the deletions (or there were none)
        except TransportError as exc:
            db.session.rollback()
            report.error = exc.message
            record_failure(mailbox, exc.message, now, transient=exc.transient)
            commit()
            decider.finish()  # what was stored before the failure is still decided
            return report
        record_success(mailbox, now)
        commit()
        decider.finish()
    return report

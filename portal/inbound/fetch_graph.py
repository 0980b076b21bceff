"""Fetching a Microsoft Graph mailbox with the promises of fetch.py: nothing lost, nothing doubled.

Per configured folder, a delta round: each page's messages downloaded (`$value`, the raw MIME, so
the same pipeline decides), stored and COMMITTED, handed to the decider, and only then marked
read or moved on the server. The round's delta link is stored after its last page is committed:
a crash before that reads the round again from the old link, and the raw row, unique per
(mailbox, folder, 0, Graph message id), keeps anything from being stored twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select, update

from portal import faults
from portal.extensions import db
from portal.inbound.fetch import (
    Decider,
    FetchReport,
    hold_mailbox,
    in_folder,
    known_server_ids,
    refresh_statistics,
    store_raw_batch,
    stored_batch,
)
from portal.inbound.lookups import one_of
from portal.models import FolderState, Mailbox, RawMessage
from portal.services.mailbox_oauth import forget_access_token
from portal.transport.graph import DeltaExpired, GraphSession, TokenRefused

log = logging.getLogger(__name__)

UIDVALIDITY = 0  # Graph has none: its message ids stay while a message stays in its folder


def fetch_graph(mailbox: Mailbox, session: GraphSession, commit: Callable[[], None], *, decider: Decider,
                max_size: int, report: FetchReport) -> None:
    try:
        _fetch_folders(mailbox, session, commit, decider=decider, max_size=max_size, report=report)
    except TokenRefused:
        # Kept through the fetch's rollback: the next poll asks for a new token, and a grant the
        # provider refuses then becomes "reconnect needed" with the provider's words.
        if mailbox.oauth is not None:
            forget_access_token(mailbox.oauth)
            commit()
        raise


def _fetch_folders(mailbox: Mailbox, session: GraphSession, commit: Callable[[], None], *, decider: Decider,
                   max_size: int, report: FetchReport) -> None:
    for folder in mailbox.folders:
        hold_mailbox(mailbox)  # until the commit below: a racing fetch must not add the folder too
        state_row = db.session.scalar(select(FolderState).where(FolderState.mailbox_id == mailbox.id,
                                                                FolderState.folder == folder))
        if state_row is None:
            db.session.add(FolderState(mailbox_id=mailbox.id, folder=folder, uidvalidity=UIDVALIDITY, last_uid=0))
        link = state_row.delta_link if state_row is not None else None  # read under the hold
        commit()
        finish_graph_actions(mailbox, session, folder, commit)  # what a crash left untold
        if link and not session.owns(link):
            # The API URL changed since: that link is not followed with the token; the folder is read again.
            log.warning("%s %s: the stored delta link is not on %s; reading the folder again",
                        mailbox.address, folder, session.settings.api_url)
            link = None
        try:
            new_link = _round(mailbox, session, folder, link, commit, decider=decider, max_size=max_size,
                              report=report)
        except DeltaExpired as expired:
            log.warning("%s %s: %s; reading the folder again, stored mail is not stored twice",
                        mailbox.address, folder, expired.message)
            new_link = _round(mailbox, session, folder, None, commit, decider=decider, max_size=max_size,
                              report=report)
        # Only now, with every page of the round committed: the next round starts here.
        db.session.execute(update(FolderState).where(FolderState.mailbox_id == mailbox.id,
                                                     FolderState.folder == folder).values(delta_link=new_link))
        commit()


def _round(mailbox: Mailbox, session: GraphSession, folder: str, link: str | None, commit: Callable[[], None], *,
           decider: Decider, max_size: int, report: FetchReport) -> str | None:
    """One delta round, page by page; returns its delta link."""
    delta_link = None
    for page in session.delta(folder, link, since=mailbox.sync_start_date):
        known = known_server_ids(mailbox, folder, UIDVALIDITY, among=page.ids) if page.ids else set()
        # A message marked read by us comes back as changed: it is known and skipped here.
        wanted = [mid for mid in dict.fromkeys(page.ids) if mid[:255] not in known]
        fetched = session.fetch(wanted, max_size, page.received)
        faults.reached("after-fetch")
        hold_mailbox(mailbox)  # until the commit: a racing fetch stores none of these again
        known = known_server_ids(mailbox, folder, UIDVALIDITY, among=[f.server_id for f in fetched]) if fetched else set()
        fetched = [f for f in fetched if f.server_id[:255] not in known]
        report.fetched += store_raw_batch(mailbox, fetched, folder=folder, uidvalidity=UIDVALIDITY)
        refresh_statistics()
        commit()  # the bytes are safe: only now may the server be told
        faults.reached("after-commit")
        if fetched:
            decider.hand(stored_batch(mailbox, folder, UIDVALIDITY, {f.server_id[:255]: f.raw for f in fetched}))
        finish_graph_actions(mailbox, session, folder, commit)
        delta_link = page.delta_link or delta_link
    return delta_link


def finish_graph_actions(mailbox: Mailbox, session: GraphSession, folder: str, commit: Callable[[], None]) -> None:
    """Mark read or move every stored message of the folder the server has not been told of."""
    rows = db.session.execute(select(RawMessage.id, RawMessage.server_id).where(
        *in_folder(mailbox, folder, UIDVALIDITY), RawMessage.server_done.is_(False))).all()
    if not rows:
        return
    ids = [r.server_id for r in rows]
    faults.reached("before-server-action")
    if mailbox.after_action == "move" and mailbox.processed_folder:
        session.move(ids, mailbox.processed_folder)
    else:
        session.mark_read(ids)
    for condition in one_of(RawMessage.__table__.c.id, [r.id for r in rows]):
        db.session.execute(update(RawMessage.__table__).where(condition).values(server_done=True))
    commit()

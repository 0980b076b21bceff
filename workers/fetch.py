"""Fetching mailboxes: the scheduler enqueues due ones, a worker fetches one at a time."""

from __future__ import annotations

import logging
from dataclasses import asdict

from portal.extensions import db
from portal.jobs import discard_pending, enqueue, exclusive
from portal.models import Mailbox
from portal.models.base import utcnow
from portal.outbound.outbox import ask_for_send
from portal.services import commit
from portal.inbound.fetch import run_fetch
from portal.inbound.push import ask_again
from portal.inbound.fetch_now import FetchRefused, fetch_now, in_words, tell_outcome
from portal.inbound.health import due_mailboxes, fetch_lock, fetch_options, record_failure, stopped_in_words
from portal.transport import open_session
from workers.runtime import current_app, job, outage_in_words

log = logging.getLogger(__name__)

@job
def fetch_mailbox(mailbox_id: int) -> dict:
    mailbox = db.session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return {"mailbox_id": mailbox_id, "skipped": "the mailbox no longer exists"}
    with exclusive(fetch_lock(mailbox_id)) as mine:
        if not mine:
            return {"mailbox_id": mailbox_id, "skipped": "another worker is fetching this mailbox"}
        cfg = current_app.config
        try:
            report = run_fetch(mailbox, open_session=open_session, keys=cfg["TIDEMARK_ENCRYPTION_KEY"],
                               secret=cfg["SECRET_KEY"].encode(), commit=commit, ca_file=cfg["TIDEMARK_CA_FILE"],
                               host=cfg["TIDEMARK_MAIL_HOST"])
        except Exception as exc:  # noqa: BLE001 - told on the mailbox, then RQ hears of it
            _record_stopped(mailbox_id, exc)
            raise
    # Acknowledgements and alerts went into the outbox with the tickets: send them now.
    ask_for_send()
    return asdict(report)


@job
def fetch_mailbox_now(mailbox_id: int) -> dict:
    """"Fetch now" from the portal: one fetch whatever the schedule (`fetch_now`, the scheduled
    fetch's lock), its outcome told to the page that asked."""
    mailbox = db.session.get(Mailbox, mailbox_id)
    cfg = current_app.config
    try:
        if mailbox is None:
            raise FetchRefused("the mailbox no longer exists")
        fetched = fetch_now(mailbox, keys=cfg["TIDEMARK_ENCRYPTION_KEY"], secret=cfg["SECRET_KEY"].encode(),
                            commit=commit, ca_file=cfg["TIDEMARK_CA_FILE"], host=cfg["TIDEMARK_MAIL_HOST"])
    except FetchRefused as exc:
        tell_outcome(mailbox_id, str(exc), ok=False)
        return {"mailbox_id": mailbox_id, "skipped": str(exc)}
    except Exception as exc:  # noqa: BLE001 - told on the mailbox and to the page, then RQ hears of it
        _record_stopped(mailbox_id, exc)
        tell_outcome(mailbox_id, stopped_in_words(exc), ok=False)
        raise
    ask_for_send()
    words, ok = in_words(fetched)
    tell_outcome(mailbox_id, words, ok=ok)
    return asdict(fetched.report)


def _record_stopped(mailbox_id: int, exc: Exception) -> None:
    """Show on the mailbox why its fetch stopped, in a transaction of its own (the fetch's is
    rolled back). Mail stored before the error is kept and decided by the next poll. If the
    database is still away this fails too, and only the worker's log tells."""
    db.session.rollback()
    discard_pending()
    try:
        mailbox = db.session.get(Mailbox, mailbox_id)
        if mailbox is not None:
            record_failure(mailbox, stopped_in_words(exc), utcnow())
            commit()
    except Exception as failed:  # noqa: BLE001 - the original error is the one to raise
        words = outage_in_words(failed)  # the database still away: one line, not a traceback
        log.warning("could not record the failed fetch of mailbox %s%s", mailbox_id, f": {words}" if words else "",
                    exc_info=words is None)
        db.session.rollback()
        discard_pending()


@job
def enqueue_due_fetches() -> int:
    """Run by the scheduler every few seconds; safe to run any number of times."""
    due = due_mailboxes(utcnow())
    for mailbox in due:
        enqueue("workers.fetch.fetch_mailbox", mailbox.id, options=fetch_options(mailbox.id))
    ask_again()  # notified while a fetch ran (a Graph notification): its mail may be after that fetch's look
    return len(due)

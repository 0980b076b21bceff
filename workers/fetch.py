"""Fetching mailboxes: the scheduler enqueues due ones, a worker fetches one at a time."""

from __future__ import annotations

from dataclasses import asdict

from portal.extensions import db
from portal.jobs import enqueue, exclusive
from portal.models import Mailbox
from portal.models.base import utcnow
from portal.services import commit
from portal.services.fetching import due_mailboxes, run_fetch
from portal.transport import open_session
from workers.outbound import ask_for_send
from workers.runtime import current_app, job

# A finished fetch leaves no job behind (result_ttl 0), so the next one can use the same id;
# a failed one is kept briefly for inspection, not for RQ's default of a year.
FETCH_OPTIONS = {"unique": True, "result_ttl": 0, "failure_ttl": 300, "job_timeout": 3600}


def fetch_options(mailbox_id: int) -> dict:
    return {**FETCH_OPTIONS, "job_id": f"fetch-mailbox-{mailbox_id}"}


@job
def fetch_mailbox(mailbox_id: int) -> dict:
    mailbox = db.session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return {"mailbox_id": mailbox_id, "skipped": "the mailbox no longer exists"}
    with exclusive(f"fetch-mailbox-{mailbox_id}", ttl=3600) as mine:
        if not mine:
            return {"mailbox_id": mailbox_id, "skipped": "another worker is fetching this mailbox"}
        cfg = current_app.config
        report = run_fetch(mailbox, open_session=open_session, keys=cfg["TIDEMARK_ENCRYPTION_KEY"],
                           secret=cfg["SECRET_KEY"].encode(), commit=commit, ca_file=cfg["TIDEMARK_CA_FILE"],
                           host=cfg["TIDEMARK_MAIL_HOST"])
    # Acknowledgements and alerts went into the outbox with the tickets: send them now.
    ask_for_send()
    return asdict(report)


@job
def enqueue_due_fetches() -> int:
    """Run by the scheduler every few seconds; safe to run any number of times."""
    due = due_mailboxes(utcnow())
    for mailbox in due:
        enqueue("workers.fetch.fetch_mailbox", mailbox.id, options=fetch_options(mailbox.id))
    return len(due)

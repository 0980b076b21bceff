"""Microsoft Graph change-notification subscriptions (portal.inbound.graph_push): kept on a
schedule (created, renewed before expiry, deleted when no longer wanted), for one mailbox when it
changes, and on Graph's lifecycle events."""

from __future__ import annotations

import logging
from dataclasses import asdict

from portal.extensions import db
from portal.inbound.graph_push import keep_subscriptions, mailboxes_to_keep
from portal.jobs import exclusive
from portal.models import Mailbox
from portal.services import commit
from workers.runtime import current_app, job

log = logging.getLogger(__name__)


def subscriptions_lock(mailbox_id: int) -> str:
    return f"graph-subscriptions-{mailbox_id}"


@job
def keep_mailbox_subscriptions(mailbox_id: int, event: str | None = None, subscription_id: str | None = None) -> dict:
    """One mailbox's subscriptions; `event`: a lifecycle event Graph sent for `subscription_id`.
    Skipped while another worker keeps them: the scheduled run within RENEW_EVERY sees to it
    (a renewal reauthorizes too, and one Graph removed is created again)."""
    mailbox = db.session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return {"mailbox_id": mailbox_id, "skipped": "the mailbox no longer exists"}
    with exclusive(subscriptions_lock(mailbox_id)) as mine:
        if not mine:
            return {"mailbox_id": mailbox_id, "skipped": "another worker keeps its subscriptions"}
        cfg = current_app.config
        report = keep_subscriptions(mailbox, keys=cfg["TIDEMARK_ENCRYPTION_KEY"], portal_url=cfg["TIDEMARK_PORTAL_URL"],
                                    event=event, subscription_id=subscription_id)
        commit()
    return {"mailbox_id": mailbox_id, **asdict(report)}


@job
def keep_graph_subscriptions() -> int:
    """Run by the scheduler every RENEW_EVERY: every mailbox that has subscriptions or should."""
    kept = 0
    for mailbox_id in mailboxes_to_keep():
        try:
            keep_mailbox_subscriptions(mailbox_id)
            kept += 1
        except Exception:  # noqa: BLE001 - one mailbox's trouble must not hold the others
            log.warning("the Graph subscriptions of mailbox %s were not kept", mailbox_id, exc_info=True)
            db.session.rollback()
    return kept

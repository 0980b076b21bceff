"""Housekeeping jobs run by the cron scheduler."""

from __future__ import annotations

from datetime import timedelta

from portal.inbound.retention import purge_all
from portal.models.base import utcnow
from portal.services import commit
from portal.services.mailbox_alerts import send_expiry_alerts
from portal.services.sla_alerts import alert_batch, candidate_batches
from portal.services.users import prune_sign_in_failures as prune
from workers.runtime import current_app, job


@job
def prune_sign_in_failures() -> int:
    # Keep a day beyond the throttling window so recent history stays visible to admins.
    return prune(current_app.config["LOGIN_WINDOW"] + timedelta(days=1))


@job
def alert_expiring_sign_ins() -> int:
    """OAuth2 grants and client secrets 14, 3 and 1 days before they expire; the mail goes out
    after the commit."""
    return len(send_expiry_alerts(utcnow()))


@job
def purge_old_mail() -> int:
    """Each MSP's raw mail past its retention days (a bounded batch per run; the log and each
    MSP's history say what went). Returns how many items went."""
    return sum(p.total for p in purge_all(utcnow()).values())


@job
def alert_service_levels() -> int:
    """SLA warnings and breaches due by now, each once; every batch of tickets is committed with
    the mail it queued (so its claim is short). Returns how many mails were queued."""
    now, queued = utcnow(), 0
    for msp_id, ids in candidate_batches(now):
        queued += len(alert_batch(msp_id, ids, now))
        commit()
    return queued

"""Housekeeping jobs run by the cron scheduler."""

from __future__ import annotations

from datetime import timedelta

from portal.models.base import utcnow
from portal.services.mailbox_alerts import send_expiry_alerts
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

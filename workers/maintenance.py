"""Housekeeping jobs run by the cron scheduler."""

from __future__ import annotations

from datetime import timedelta

from portal.services.users import prune_sign_in_failures as prune
from workers.runtime import current_app, job


@job
def prune_sign_in_failures() -> int:
    # Keep a day beyond the throttling window so recent history stays visible to admins.
    return prune(current_app.config["LOGIN_WINDOW"] + timedelta(days=1))

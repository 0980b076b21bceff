"""Sending what is in the outbox: the scheduler and the fetch job ask for it."""

from __future__ import annotations

from portal.jobs import exclusive
from portal.models.base import utcnow
from portal.services import commit
from portal.services.sending import SEND_OPTIONS, deliver, due
from portal.services.sending import send_environment as environment
from workers.runtime import job

__all__ = ["SEND_OPTIONS", "environment", "send_due"]


@job
def send_due() -> dict:
    """Send every due outbound message, each committed as soon as it is settled."""
    counts: dict[str, int] = {}
    with exclusive("send-outbox", ttl=900) as mine:
        if not mine:
            return {"skipped": "another worker is sending"}
        env = environment()
        for message in due(utcnow()):
            state = deliver(message, env)
            commit()
            counts[state] = counts.get(state, 0) + 1
    return counts

"""Sending what is in the outbox: the scheduler and the fetch job ask for it."""

from __future__ import annotations

import time

from portal.jobs import exclusive
from portal.models.base import utcnow
from portal.services import commit
from portal.services.sending import SEND_OPTIONS, ask_for_send, deliver, due_batches
from portal.services.sending import send_environment as environment
from workers.runtime import job

__all__ = ["SEND_OPTIONS", "ask_for_send", "environment", "send_due"]

# A run stops taking new mail after this long, well inside RQ's job timeout (180 s by default);
# what is left goes out on the scheduler's next tick.
SEND_BUDGET_SECONDS = 100.0


@job
def send_due(budget: float = SEND_BUDGET_SECONDS) -> dict:
    """Send every due outbound message. Mail handed to a server is committed at once, so that
    a crash cannot send it twice; mail settled without one (held, blocked, failed before
    sending) is committed a batch at a time."""
    counts: dict[str, int] = {}
    with exclusive("send-outbox", ttl=900) as mine:
        if not mine:
            return {"skipped": "another worker is sending"}
        env, servers = environment(), {}
        stop_at = time.monotonic() + budget
        for batch in due_batches(utcnow()):
            for message in batch:
                if time.monotonic() >= stop_at:
                    return counts  # the job commits what this batch settled
                tries = message.details.get("attempts", 0)
                state = deliver(message, env, servers=servers)
                if message.details.get("attempts", 0) != tries:
                    commit()
                counts[state] = counts.get(state, 0) + 1
            commit()
    return counts

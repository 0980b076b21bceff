"""What a reply does to the ticket it threads into (DESIGN step 7). Pure."""

from __future__ import annotations

from dataclasses import dataclass

APPEND = "append"  # onto this ticket
NEW_LINKED = "new-linked"  # a new ticket for the same client, linked to this one
NEW_SAME_CLIENT = "new-same-client"
NEW_IN_MAILBOX_CLIENT = "new-in-mailbox-client"


@dataclass(frozen=True)
class StatusAction:
    kind: str
    new_status: str | None = None  # None = unchanged
    flag_new_information: bool = False
    outcome: str = "appended"
    reason: str = ""


def action_for(status: str, *, client_disabled: bool, quiet: bool) -> StatusAction:
    """`quiet`: an auto-generated answer to our own automatic mail (an out-of-office to an
    acknowledgement): kept on the ticket, but it changes nothing and raises no flag."""
    if client_disabled:
        return StatusAction(NEW_IN_MAILBOX_CLIENT, outcome="created",
                            reason="the ticket's client is disabled: new ticket in the mailbox's client")
    if status == "closed":
        return StatusAction(NEW_LINKED, outcome="created", reason="ticket is closed: new ticket linked to it")
    if status == "archived":
        return StatusAction(NEW_SAME_CLIENT, outcome="created", reason="ticket is archived: new ticket")
    if quiet:
        return StatusAction(APPEND, reason="automatic answer to our automatic mail: stored, nothing changed")
    if status in ("merged", "split"):
        # Only when its merge leads nowhere (a loop) or it has no children left: kept on it.
        return StatusAction(APPEND, flag_new_information=True, reason=f"status {status} unchanged, new information")
    if status in ("new", "open"):
        return StatusAction(APPEND, flag_new_information=True, reason=f"status {status} unchanged, new information")
    if status == "waiting":
        return StatusAction(APPEND, "open", True, reason="status waiting → open")
    if status == "resolved":
        return StatusAction(APPEND, "open", True, outcome="reopened", reason="status resolved → open (reopened)")
    raise ValueError(f"no rule for a ticket in status {status!r}")

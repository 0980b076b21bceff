"""In-Reply-To and References for the mail we send on a ticket.

A ticket carries two conversations. The customer's: their mail and what we sent them
(acknowledgement, replies, notifications of changes). The staff's: alerts to the on-call
engineers, and their answers by mail. Mail threads on its own conversation only, so the
customer's mail client groups our answer with their mail and never sees an alert's Message-ID,
and alerts group among themselves. Notes are no mail and thread nowhere.

Mail answers the newest mail that came in on its conversation (what we sent is not what we
answer), or, when none came in, the newest we sent on it. References are that parent's
References and its Message-ID (RFC 5322), without any id of the other conversation.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CUSTOMER = "customer"
STAFF = "staff"
# Outbound events whose mail goes to the customer; any other event is staff mail.
CUSTOMER_EVENTS = frozenset({"ticket_created", "reply", "reopened", "closed", "owner_changed", "priority_changed",
                             "sla_changed"})


@dataclass(frozen=True)
class Mail:
    """One message of a ticket that has a Message-ID, as threading sees it."""

    message_id: str
    direction: str  # "in" or "out"
    event: str | None = None  # outbound: the template event
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


def split_conversations(mails: Iterable[Mail]) -> dict[str, list[Mail]]:
    """The ticket's mail (oldest first) by conversation. Inbound mail belongs where the mail it
    answers does: its In-Reply-To, else the nearest of its References that is on the ticket;
    mail answering nothing we know is the customer's."""
    out: dict[str, list[Mail]] = {CUSTOMER: [], STAFF: []}
    side_of: dict[str, str] = {}
    for m in mails:
        if m.direction == "out":
            side = CUSTOMER if m.event in CUSTOMER_EVENTS else STAFF
        elif m.direction == "in":
            answered = (side_of.get(i) for i in (m.in_reply_to, *reversed(m.references)) if i)
            side = next((s for s in answered if s), CUSTOMER)
        else:
            continue
        side_of.setdefault(m.message_id, side)
        out[side].append(m)
    return out


def thread_headers(mails: Iterable[Mail], conversation: str = CUSTOMER) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for new mail on one conversation of a ticket (mail oldest first)."""
    sides = split_conversations(mails)
    mine = sides[conversation]
    if not mine:
        return None, []
    parent = next((m for m in reversed(mine) if m.direction == "in"), mine[-1])
    other = {m.message_id for side, ms in sides.items() if side != conversation for m in ms}
    references = [r for r in dict.fromkeys([*parent.references, parent.message_id]) if r not in other]
    return parent.message_id, references

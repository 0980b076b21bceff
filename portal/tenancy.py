"""The rules of an MSP's client tree (DESIGN "Words": client, allow-list, template), in one place:

- a setting is inherited from the nearest client up the chain that sets it (the time zone and the
  language a client's mail reads in too: the nearest that sets one this system knows, else UTC
  and English);
- a client is disabled when it or any ancestor is disabled;
- a template or canned response is the client's own, or one an ancestor shares down, the
  nearest winning;
- an allow-list claims a sender by address, then by domain, then by each parent domain.

Pure: every function takes clients already loaded (or a chain of them) and never queries, so
the inbound pipeline can apply the same rules to its in-memory copy of the tree.
A chain is a client followed by its ancestors, the MSP root last.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from portal.mail.allowlist import allow_list_claims, allow_list_match, domain_suffixes
from portal.mail.language import language_named
from portal.mail.times import zone_named

__all__ = ["allow_list_claims", "allow_list_match", "descendant_ids", "disabled_by", "domain_suffixes",
           "inherited", "language_of", "lineage", "lineage_in", "nearest", "shared_down", "timezone_of"]

C = TypeVar("C")
R = TypeVar("R")


def lineage(client: Any) -> list[Any]:
    """The client, its parent, … the MSP root, following the loaded `parent` relations."""
    chain = []
    node = client
    while node is not None:
        chain.append(node)
        node = node.parent
    return chain


def lineage_in(client_id: int | None, clients: Mapping[int, C]) -> list[C]:
    """The same chain read from a tree already in memory (id → client), through `parent_id`."""
    chain = []
    node = clients.get(client_id)  # type: ignore[arg-type]
    while node is not None:
        chain.append(node)
        node = clients.get(node.parent_id)  # type: ignore[attr-defined]
    return chain


def nearest(chain: Iterable[C], name: str) -> C | None:
    """The first client of the chain that sets `name`, or None: the one a setting comes from."""
    return next((c for c in chain if getattr(c, name)), None)


def inherited(chain: Iterable[Any], name: str) -> Any:
    """The value in effect for the chain's first client; None = the built-in default."""
    source = nearest(chain, name)
    return getattr(source, name) if source is not None else None


def timezone_of(client: Any) -> ZoneInfo:
    """The zone the client's mail reads its times in: its own, else the nearest ancestor's, the
    MSP's last; a zone name the system no longer knows is passed over; UTC when none is set."""
    return zone_named(*(c.timezone for c in lineage(client)))


def language_of(client: Any) -> str:
    """The language of the client's customer-facing mail, found as its time zone is: its own, else
    the nearest ancestor's, the MSP's last; a code the product does not speak is passed over;
    English when none is set."""
    return language_named(*(c.language for c in lineage(client)))


def disabled_by(chain: Iterable[C]) -> C | None:
    """The client whose disabled flag switches the chain's first client off, or None."""
    return nearest(chain, "disabled")


def shared_down(chain: Sequence[C], rows_by_client: Mapping[int, Iterable[R]]) -> Iterator[tuple[R, C]]:
    """(row, owner) for the rows the chain's first client may use, nearest first: all its own,
    then those each ancestor marks `shared`."""
    for depth, client in enumerate(chain):
        for row in rows_by_client.get(client.id, ()):  # type: ignore[attr-defined]
            if depth == 0 or row.shared:  # type: ignore[attr-defined]
                yield row, client


def descendant_ids(clients: Iterable[Any], root_id: int) -> set[int]:
    """Ids of every client below `root_id` (not itself), from the whole tree in memory."""
    kids: dict[int | None, list[int]] = {}
    for c in clients:
        kids.setdefault(c.parent_id, []).append(c.id)
    found, todo = set(), [root_id]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found

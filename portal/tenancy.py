"""The rules of an MSP's client tree (DESIGN "Words": client, allow-list, template), in one place:

- a setting is inherited from the nearest client up the chain that sets it;
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

from portal.mail.allowlist import allow_list_claims, allow_list_match, domain_suffixes

__all__ = ["allow_list_claims", "allow_list_match", "descendant_ids", "disabled_by", "domain_suffixes",
           "inherited", "lineage", "lineage_in", "nearest", "shared_down"]

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

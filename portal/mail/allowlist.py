"""Which allow-list entry claims a sender: the address itself, then its domain, then each parent
domain (mail.contoso.com before contoso.com), never a bare top-level domain.

Pure: the caller passes the normalised lists (portal.services.allowlist normalises entries and
senders with the same code) as value → client id, and a lower-case sender.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


def domain_suffixes(address: str) -> list[str]:
    """`a@mail.contoso.com` → `['mail.contoso.com', 'contoso.com']`: the most specific first."""
    labels = address.rpartition("@")[2].split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def allow_list_claims(sender: str, addresses: Mapping[str, int],
                      domains: Mapping[str, int]) -> Iterator[tuple[int, str]]:
    """Every (client id, entry) that lists this sender, the strongest claim first."""
    if sender in addresses:
        yield addresses[sender], sender
    for domain in domain_suffixes(sender):
        if domain in domains:
            yield domains[domain], domain


def allow_list_match(sender: str, addresses: Mapping[str, int],
                     domains: Mapping[str, int]) -> tuple[int, str] | None:
    """(client id, entry) of the claim that wins, or None when no list has the sender."""
    return next(allow_list_claims(sender, addresses, domains), None)

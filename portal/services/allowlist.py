"""Allow-list entries: sender addresses and domains, normalised so that matching is exact.

Pure functions: routing normalises a sender with the same code it normalises the list with.
"""

from __future__ import annotations

import re

import idna
from email_validator import EmailNotValidError, validate_email

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SPLIT = re.compile(r"[\s,;]+")


class AllowEntryError(ValueError):
    pass


def normalise_domain(raw: str) -> str:
    """Lower-case ASCII (IDNA) form of a domain, e.g. 'Bücher.Example.' -> 'xn--bcher-kva.example'."""
    text = raw.strip().rstrip(".")
    if text.startswith("@"):
        text = text[1:]
    if not text:
        raise AllowEntryError("is empty")
    if "@" in text:
        raise AllowEntryError(f"{raw!r} is not a domain")
    try:
        ascii_form = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AllowEntryError(f"{raw!r} is not a valid domain name ({exc})") from None
    labels = ascii_form.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise AllowEntryError(f"{raw!r} is not a valid domain name")
    return ascii_form


def normalise_address(raw: str) -> str:
    """Lower-case address with an IDNA domain, e.g. 'Boss@GMail.com' -> 'boss@gmail.com'."""
    text = raw.strip()
    try:
        # Special-use domains (.local, .test, .internal) are real on MSP networks.
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True,
                                 globally_deliverable=False, test_environment=True)
    except EmailNotValidError as exc:
        raise AllowEntryError(f"{raw!r} is not a valid email address ({exc})") from None
    local = checked.local_part.lower()
    return f"{local}@{normalise_domain(checked.domain)}"


def normalise_entry(raw: str) -> tuple[str, str]:
    """(kind, value) for one entry: kind is 'address' or 'domain'."""
    text = raw.strip()
    if "@" in text.lstrip("@"):
        return "address", normalise_address(text)
    return "domain", normalise_domain(text)


def parse_allow_list(text: str | list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Normalise a pasted list (one per line, or separated by commas/spaces).

    Returns the unique entries in input order and one message per entry that is not valid.
    """
    items = text if isinstance(text, list) else _SPLIT.split(text or "")
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    errors: list[str] = []
    for item in items:
        if not item.strip():
            continue
        try:
            kind, value = normalise_entry(item)
        except AllowEntryError as exc:
            errors.append(str(exc))
            continue
        if value not in seen:
            seen.add(value)
            entries.append((kind, value))
    return entries, errors

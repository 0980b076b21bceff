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
    """An entry that is not an address or a domain, said in the product's words (never the
    library's: idna and email_validator speak of code points and @-signs)."""


def _not_a_domain(raw: str) -> AllowEntryError:
    text = raw.strip()
    if "://" in text or "/" in text:
        return AllowEntryError(f"“{text}” is not a domain name: type only the name, e.g. contoso.com "
                               "(no http:// and no path).")
    return AllowEntryError(f"“{text}” is not a domain name like contoso.com: use letters, digits, hyphens "
                           "and dots, with a dot between the parts.")


def _not_an_address(raw: str) -> AllowEntryError:
    text = raw.strip()
    if not text:
        return AllowEntryError("Type an email address, e.g. name@contoso.com.")
    return AllowEntryError(f"“{text}” is not an email address like name@contoso.com.")


# Public mail services: anyone can have an address there, so a domain entry for one of them would
# give every stranger's mail to one client. For these, the sender's own address goes on a list.
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de",
    "live.com", "live.co.uk", "msn.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com",
    "aol.com", "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com", "pm.me", "gmx.com", "gmx.de",
    "gmx.net", "web.de", "t-online.de", "mail.com", "zoho.com", "yandex.com", "yandex.ru", "mail.ru",
    "fastmail.com", "tutanota.com", "hey.com", "orange.fr", "free.fr", "laposte.net", "qq.com", "163.com",
})


def is_freemail(domain: str) -> bool:
    """Whether a (normalised) domain is a public mail service's, or one of its subdomains."""
    labels = domain.lower().rstrip(".").split(".")
    return any(".".join(labels[i:]) in FREEMAIL_DOMAINS for i in range(len(labels) - 1))


def normalise_domain(raw: str) -> str:
    """Lower-case ASCII (IDNA) form of a domain, e.g. 'Bücher.Example.' -> 'xn--bcher-kva.example'."""
    text = raw.strip().rstrip(".")
    if text.startswith("@"):
        text = text[1:]
    if not text:
        raise AllowEntryError("Type a domain name, e.g. contoso.com.")
    if "@" in text:
        raise AllowEntryError(f"“{raw.strip()}” is not a domain name: a domain has no @, e.g. contoso.com.")
    try:
        ascii_form = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise _not_a_domain(raw) from None
    labels = ascii_form.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise _not_a_domain(raw)
    return ascii_form


def normalise_address(raw: str) -> str:
    """Lower-case address with an IDNA domain, e.g. 'Boss@GMail.com' -> 'boss@gmail.com'."""
    text = raw.strip()
    try:
        # Special-use domains (.local, .test, .internal) are real on MSP networks.
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True,
                                 globally_deliverable=False, test_environment=True)
    except EmailNotValidError:
        raise _not_an_address(raw) from None
    local = checked.local_part.lower()
    return f"{local}@{normalise_domain(checked.domain)}"


def normalise_entry(raw: str) -> tuple[str, str]:
    """(kind, value) for one entry: kind is 'address' or 'domain'."""
    text = raw.strip()
    if "@" in text.lstrip("@"):
        return "address", normalise_address(text)
    return "domain", normalise_domain(text)


def parse_allow_list(text: str | list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Normalise a pasted list (one per line, or separated by spaces, commas or semicolons).

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

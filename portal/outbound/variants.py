"""The named alternatives of the acknowledgement (the "ticket created" template) that a mailbox
or a route chooses for its new tickets: which names a client may choose, and checking a choice.
Kept apart from portal.outbound.templates so that the mailbox and route services can check a
choice without importing the sending machinery. Flush, never commit."""

from __future__ import annotations

import re

from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.mail.render import BUILTIN_VARIANTS
from portal.models import Client, EmailTemplate

# An alternative's name: short, lower-case, safe in a URL and a configuration file.
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
VARIANT_EVENT = "ticket_created"  # only the acknowledgement has alternatives a mailbox or route chooses


def variant_names(client: Client, event: str = VARIANT_EVENT) -> list[str]:
    """The alternatives of an event's template the client may use, by name: the built-in ones and
    those of its own and its ancestors' that reach it (as template_in_effect finds them)."""
    chain = tenancy.lineage(client)
    depth = {c.id: i for i, c in enumerate(chain)}
    names = set(BUILTIN_VARIANTS.get(event, ()))
    for row in db.session.scalars(select(EmailTemplate).where(
            EmailTemplate.client_id.in_(list(depth)), EmailTemplate.event == event, EmailTemplate.variant != "")):
        owner = chain[depth[row.client_id]]
        if depth[row.client_id] == 0 or row.shared or owner.is_msp:
            names.add(row.variant)
    return sorted(names)


def check_variant_name(name: str | None, client: Client, field: str, errors: dict[str, list[str]]) -> str | None:
    """A mailbox's or route's choice of acknowledgement: None (the standard one) or a name the
    client has; an unknown name is added to errors[field]."""
    name = (name or "").strip() or None
    if name is not None and name not in variant_names(client):
        known = ", ".join(variant_names(client))
        errors.setdefault(field, []).append(
            f"{client.name} has no acknowledgement called {name!r}; choose one of: {known} (empty: the standard one).")
    return name


def variant_label(variant: str | None) -> str:
    """How a trace or a page names the acknowledgement template chosen."""
    return f'the "{variant}" acknowledgement' if variant else "the standard acknowledgement"

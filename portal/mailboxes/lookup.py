"""What every mailbox page looks up: records of the signed-in MSP only (404 otherwise), the
client tree as choices, and the key that opens stored secrets."""

from __future__ import annotations

from flask import abort, current_app, g

from portal.clients.lookup import client_or_404  # noqa: F401 - the mailbox pages' lookups in one import
from portal.services import clients as client_svc
from portal.services import mailboxes as svc


def keys() -> str:
    return current_app.config["TIDEMARK_ENCRYPTION_KEY"]


def mailbox_or_404(mailbox_id: int):
    mailbox = svc.get_mailbox(g.msp_id, mailbox_id)
    if mailbox is None:
        abort(404)
    return mailbox


def chosen_client(form, default_id: int):
    """The client a form's client select names, if it is one of the offered ones, else `default_id`'s."""
    offered = {value for value, _ in form.client_id.choices}
    return client_or_404(form.client_id.data if form.client_id.data in offered else default_id)


def client_choices() -> list[tuple[int, str]]:
    return [(n.client.id, "\u2003" * n.depth + n.client.name) for n in client_svc.client_tree(g.msp_id)]

"""The state of a mailbox's OAuth2 grant (connected, not connected, reconnect needed), as the
history tells it, and trying a refused app-only grant again once an admin has mended what the
provider refused. Below mailbox_oauth, tenant_consent and microsoft_app, which all change it;
imports none of them. Flush, never commit.
"""

from __future__ import annotations

from collections.abc import Iterable

from portal.extensions import db
from portal.models import MailboxOAuth, User
from portal.models.base import utcnow
from portal.services import audit


def grant_label(row: MailboxOAuth) -> str:
    if row.state == "connected":
        return f"connected as {row.account}" if row.account else "connected"
    return row.state


def set_state(row: MailboxOAuth, state: str, reason: str | None) -> bool:
    """Returns whether the state changed."""
    changed = row.state != state
    if changed or row.state_reason != reason:
        row.state_changed_at = utcnow() if changed or row.state_changed_at is None else row.state_changed_at
    row.state, row.state_reason = state, reason
    return changed


def record(row: MailboxOAuth, actor: User | None, action: str, before: str, reason: str | None = None) -> None:
    mailbox = row.mailbox
    changes = {"oauth.grant": [before, grant_label(row)]}
    if reason:
        changes["reason"] = [None, reason]
    audit.record(actor, mailbox.msp_id, "mailbox", mailbox.id, f"OAuth2 {action}", changes)


def try_again(rows: Iterable[MailboxOAuth], because: str, *, actor: User | None = None) -> list[MailboxOAuth]:
    """App-only grants in "reconnect needed" are asked for again at their next connection: what
    the provider refused (the app's secret, the tenant's consent) has changed. Returns those."""
    again = [row for row in rows if row.flow == "app" and row.state == "reconnect needed"]
    for row in again:
        set_state(row, "not connected", None)
        record(row, actor, "to be tried again", "reconnect needed", because)
    db.session.flush()
    return again

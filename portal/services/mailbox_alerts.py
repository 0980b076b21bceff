"""Alerts to a mailbox's alert recipients: each one a MailboxAlert row, and a mail from the
template of its kind (editable per client like the others) when the mailbox has recipients.

- mailbox_failing / mailbox_recovered: a failure streak of fetching (portal.inbound.health);
- reconnect_needed: the provider refused an OAuth2 grant, once per streak
  (services.mailbox_oauth.reconnect_needed; connecting again ends the streak);
- grant_expiring / secret_expiring: 14, 3 and 1 days before a grant or a client secret expires
  (send_expiry_alerts, run hourly by the scheduler), each threshold once per expiry date: a new
  date starts over. Without recipients nothing is recorded, so recipients added later still hear
  of the next threshold.

Flush, never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox, MailboxAlert, MailboxOAuth
from portal.outbound.outbox import queue_mail
from portal.services.grant_expiry import Expiry, borrowed_apps, expiries, watched_mailboxes

# The template each kind is mailed with; a kind not named here is recorded only.
TEMPLATE_OF = {"mailbox_failing": "mailbox_failing", "reconnect_needed": "reconnect_needed",
               "grant_expiring": "sign_in_expiring", "secret_expiring": "sign_in_expiring"}
# What a template may read of an alert's details, as mailbox.<key> (portal.mail.render.VARIABLES).
TEMPLATE_DETAILS = ("expiring", "expires_on", "days_left", "reason", "account")
_DO_NEXT = {
    "grant_expiring": "Connect the mailbox again (the Connect button on its page) before then.",
    "secret_expiring": ("Create a new client secret for the app at the provider, then enter it on the mailbox "
                        "with its expiry date."),
    # The MSP's Microsoft 365 app signing in with a certificate (services.microsoft_app).
    "certificate": ("Make a new certificate, upload it to the app registration in Entra ID, then on "
                    "Settings › Microsoft 365."),
}


def alert(mailbox: Mailbox, kind: str, message: str, details: dict[str, Any] | None = None) -> MailboxAlert:
    """Record an alert and, when the mailbox has alert recipients, queue its mail."""
    row = MailboxAlert(mailbox_id=mailbox.id, kind=kind, message=message, recipients=list(mailbox.alert_recipients),
                       details=dict(details or {}))
    db.session.add(row)
    event = TEMPLATE_OF.get(kind)
    if event and mailbox.alert_recipients:
        db.session.flush()
        queue_mail(event, msp_id=mailbox.msp_id, mailbox=mailbox, to=mailbox.alert_recipients,
                   details={"alert_id": row.id})
    return row


def reconnect_alert(row: MailboxOAuth, reason: str) -> MailboxAlert:
    mailbox = row.mailbox
    return alert(mailbox, "reconnect_needed", f"{mailbox.address} must be connected again: {reason}",
                 {"reason": reason, "account": row.account or ""})


def template_details(alert_row: MailboxAlert | None) -> dict[str, Any]:
    """The alert's values a template shows (what expires and when, why to reconnect)."""
    details = alert_row.details if alert_row is not None else None
    return {k: details[k] for k in TEMPLATE_DETAILS if k in (details or {})}


def send_expiry_alerts(now: datetime) -> list[MailboxAlert]:
    """Alert the recipients of every OAuth2 mailbox (not disabled) whose grant or client secret
    has reached an alert threshold not yet alerted for its expiry date."""
    mailboxes = [m for m in watched_mailboxes() if m.alert_recipients]
    if not mailboxes:
        return []
    sent: dict[tuple[int, str, str], int] = {}  # (mailbox, kind, expiry date) -> tightest threshold alerted
    for mailbox_id, kind, details in db.session.execute(
            select(MailboxAlert.mailbox_id, MailboxAlert.kind, MailboxAlert.details)
            .where(MailboxAlert.kind.in_(("grant_expiring", "secret_expiring")),
                   MailboxAlert.mailbox_id.in_([m.id for m in mailboxes]))):
        key = (mailbox_id, kind, (details or {}).get("expires_on"))
        sent[key] = min(sent.get(key, 999), int((details or {}).get("threshold", 999)))
    made = []
    apps = borrowed_apps(mailboxes)
    for mailbox in mailboxes:
        for expiry in expiries(mailbox.oauth, now, apps):
            threshold = expiry.due_threshold()
            if threshold is None or sent.get((mailbox.id, expiry.kind, expiry.on.isoformat()), 999) <= threshold:
                continue
            made.append(_expiry_alert(mailbox, expiry, threshold))
    db.session.flush()
    return made


def _expiry_alert(mailbox: Mailbox, expiry: Expiry, threshold: int) -> MailboxAlert:
    text = (f"The {expiry.what} of {mailbox.address} expires on {expiry.on.isoformat()} ({expiry.words}). "
            f"{_DO_NEXT.get(expiry.what, _DO_NEXT[expiry.kind])}")
    return alert(mailbox, expiry.kind, text, {
        "expiring": expiry.what, "expires_on": expiry.on.isoformat(), "days_left": max(expiry.days_left, 0),
        "threshold": threshold, "account": mailbox.oauth.account or ""})

"""When an OAuth2 mailbox's sign-in stops working by itself: the grant's expiry (what the provider
said) and the client secret's (the date the admin typed in), with the days left, for the mailbox
page, the dashboard and the alerts (portal.services.mailbox_alerts). Reads only.

Days left are calendar days (UTC) to the day it expires, so that "in 3 days" and the date shown
agree, and an alert threshold is reached on a day, not at an hour. A client secret's date is a
whole day: it expires that day ("today") and is expired from the next; a grant's expiry is a
moment, expired once past.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import contains_eager

from portal.extensions import db
from portal.models import Mailbox, MailboxOAuth, MspMicrosoftApp
from portal.services.mailbox_oauth import grant_label
from portal.services.microsoft_app import borrows_msp_app, msp_microsoft_app, msp_microsoft_apps

# Alerts go out this many days before each expiry; the pages highlight from the first of them.
THRESHOLDS = (14, 3, 1)
ATTENTION_DAYS = THRESHOLDS[0]


@dataclass(frozen=True)
class Expiry:
    kind: str  # the alert's kind: grant_expiring or secret_expiring
    what: str  # in the product's words
    on: date  # the day it expires (UTC)
    days_left: int  # calendar days; negative once past
    past: bool

    @property
    def attention(self) -> bool:
        return self.past or self.days_left <= ATTENTION_DAYS

    @property
    def words(self) -> str:
        """"in 3 days", "today", "expired 2 days ago"."""
        if self.past:
            ago = -self.days_left
            return "expired today" if ago <= 0 else f"expired {ago} day{'' if ago == 1 else 's'} ago"
        if self.days_left == 0:
            return "today"
        return f"in {self.days_left} day{'' if self.days_left == 1 else 's'}"

    def due_threshold(self) -> int | None:
        """The tightest alert threshold reached, or None (too early, or already past)."""
        if self.past:
            return None
        reached = [t for t in THRESHOLDS if self.days_left <= t]
        return min(reached) if reached else None


def grant_expiry(row: MailboxOAuth, now: datetime) -> Expiry | None:
    """A connected grant's expiry, when the provider said when."""
    at = row.grant_expires_at
    if row.state != "connected" or at is None:
        return None
    return Expiry("grant_expiring", "sign-in grant", at.date(), (at.date() - now.date()).days, at <= now)


def secret_expiry(row: MailboxOAuth, now: datetime, apps: Mapping[int, MspMicrosoftApp] | None = None) -> Expiry | None:
    """`apps`: the MSPs' Microsoft 365 apps by MSP id, when the caller looked them up for a list
    of mailboxes at once (borrowed_apps); else this mailbox's MSP's is looked up."""
    expires, what = row.credential_expires, row.credential
    if expires is None and borrows_msp_app(row):
        # The MSP's Microsoft 365 app signs this mailbox in: its secret's date, or its certificate's
        # notAfter, is the one that counts.
        msp_id = row.mailbox.msp_id
        app = apps.get(msp_id) if apps is not None else msp_microsoft_app(msp_id)
        if app is not None:
            expires, what = app.credential_expires, app.credential
    if expires is None:
        return None
    left = (expires - now.date()).days
    return Expiry("secret_expiring", what, expires, left, left < 0)


def expiries(row: MailboxOAuth | None, now: datetime, apps: Mapping[int, MspMicrosoftApp] | None = None) -> list[Expiry]:
    if row is None:
        return []
    return [e for e in (grant_expiry(row, now), secret_expiry(row, now, apps)) if e is not None]


def borrowed_apps(mailboxes: Iterable[Mailbox]) -> dict[int, MspMicrosoftApp]:
    """The Microsoft 365 apps these mailboxes sign in with (theirs being their MSP's), in one query."""
    return msp_microsoft_apps({m.msp_id for m in mailboxes if m.oauth is not None and borrows_msp_app(m.oauth)})


@dataclass(frozen=True)
class SignIn:
    """An OAuth2 mailbox's sign-in as the pages show it."""
    mailbox: Mailbox
    state: str  # connected, not connected, reconnect needed
    label: str  # "connected as helpdesk@contoso.com", "not connected", "reconnect needed"
    reason: str | None
    grant: Expiry | None
    secret: Expiry | None

    @property
    def attention(self) -> bool:
        """Reconnect needed, or a grant or secret expired or expiring within ATTENTION_DAYS."""
        return self.state == "reconnect needed" or any(e.attention for e in (self.grant, self.secret) if e)


def sign_in(mailbox: Mailbox, now: datetime, apps: Mapping[int, MspMicrosoftApp] | None = None) -> SignIn | None:
    """None for a mailbox that signs in with a password; `apps` as for secret_expiry."""
    row = mailbox.oauth
    if mailbox.auth != "oauth2" or row is None:
        return None
    reason = row.state_reason if row.state != "connected" else None
    return SignIn(mailbox, row.state, grant_label(row), reason, grant_expiry(row, now), secret_expiry(row, now, apps))


def watched_mailboxes(msp_id: int | None = None) -> list[Mailbox]:
    """OAuth2 mailboxes that are not disabled (a disabled one is neither fetched nor sent from),
    of one MSP or of all."""
    query = (select(Mailbox).join(MailboxOAuth, MailboxOAuth.mailbox_id == Mailbox.id)
             .options(contains_eager(Mailbox.oauth))  # each one's settings come with it, in this one query
             .where(Mailbox.auth == "oauth2", Mailbox.status != "disabled").order_by(Mailbox.address, Mailbox.id))
    if msp_id is not None:
        query = query.where(Mailbox.msp_id == msp_id)
    return list(db.session.scalars(query))


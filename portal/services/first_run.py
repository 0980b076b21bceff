"""The dashboard's first-run checklist: what a new MSP sets up before mail becomes tickets.
Reads only; everything scoped to the MSP (its own gateway, else the installation's)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select

from portal.extensions import db
from portal.models import AllowEntry, AuditEntry, Mailbox, Route, SmtpServer
from portal.outbound.servers import default_gateway

# What test_mail.send_test_mail records in the history when a test email went out.
TEST_SENT = "test email sent"


@dataclass
class Step:
    key: str  # "outgoing", "mailbox", "route", "test mail"
    label: str
    done: bool


@dataclass
class Checklist:
    steps: list[Step]
    first_mailbox_id: int | None

    @property
    def done(self) -> bool:
        return all(s.done for s in self.steps)

    @property
    def has_mailbox(self) -> bool:
        return self.first_mailbox_id is not None


def _any(query) -> bool:
    return bool(db.session.scalar(select(exists(query))))


def checklist(msp_id: int) -> Checklist:
    first = db.session.scalar(select(Mailbox.id).where(Mailbox.msp_id == msp_id).order_by(Mailbox.id).limit(1))
    own_server = select(SmtpServer.id).join(Mailbox, Mailbox.id == SmtpServer.mailbox_id).where(
        Mailbox.msp_id == msp_id)
    outgoing = default_gateway(msp_id) is not None or _any(own_server)
    route = _any(select(Route.id).join(Mailbox, Mailbox.id == Route.mailbox_id).where(Mailbox.msp_id == msp_id)) \
        or _any(select(AllowEntry.id).where(AllowEntry.msp_id == msp_id))
    tested = _any(select(AuditEntry.id).where(AuditEntry.msp_id == msp_id, AuditEntry.action == TEST_SENT))
    return Checklist([
        Step("outgoing", "Set an outgoing server or the default gateway", outgoing),
        Step("mailbox", "Add your first mailbox", first is not None),
        Step("route", "Add a route, or the domains a client mails from", route),
        Step("test mail", "Send a test email", tested),
    ], first)

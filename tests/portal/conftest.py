"""What the ticket pages' tests share: one MSP's help desk, its technician signed in, and a
fresh look at a ticket and its history (as the next request would see them)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Client, Mailbox, Ticket, User


@dataclass
class Desk:
    msp: Client
    box: Mailbox
    tom: User
    ana: User


@pytest.fixture
def acme(world) -> Desk:
    """Acme MSP: client Contoso (contoso.com), a mailbox that sends no acknowledgements,
    technician tom@acme.example and admin ana@acme.example."""
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    tom = world.user(msp, email="tom@acme.example", role="technician")
    ana = world.user(msp, email="ana@acme.example", role="admin")
    return Desk(msp, box, tom, ana)


@pytest.fixture
def tech(browser, acme):
    browser.sign_in("tom@acme.example")
    return browser


def fresh(ticket_id: int) -> Ticket:
    db.session.expire_all()
    return db.session.get(Ticket, ticket_id)


def ticket_history(ticket_id: int) -> list[AuditEntry]:
    return db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "ticket",
                                                       AuditEntry.record_id == ticket_id)
                              .order_by(AuditEntry.id)).all()

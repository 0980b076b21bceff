"""What the portal's tests share: an admin of the Acme MSP signed in, a small client tree, the
technician of the Acme desk (tests/conftest.py) signed in, and a fresh look at a ticket and its
history (as the next request would see them)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Ticket


@pytest.fixture
def admin(browser, world, msp):
    """ana@acme.example, an admin of the Acme MSP, signed in."""
    world.user(msp, email="ana@acme.example")
    browser.sign_in("ana@acme.example")
    return browser


@pytest.fixture
def tree(world, msp):
    """(the Acme MSP, Contoso (contoso.com) under it, Contoso Berlin (berlin.contoso.com) under
    Contoso), and technician tom@acme.example."""
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    berlin = world.client(contoso, "Contoso Berlin", allow=["berlin.contoso.com"])
    world.user(msp, email="tom@acme.example", role="technician")
    return msp, contoso, berlin


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

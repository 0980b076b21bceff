"""The demo MSP that `make run` seeds, so a newcomer has something to sign in to."""

from __future__ import annotations

from portal.models import Client, User
from portal.services import clients, users

DEMO_MSP = "Demo MSP"
DEMO_ADMIN = "admin@demo.example"
DEMO_PASSWORD = "tidemark-demo"
DEMO_CLIENTS = [
    ("Contoso", "CONTOSO", ["contoso.com"], "Best regards"),
    ("Fabrikam", "FABRIKAM", ["fabrikam.example", "ceo@gmail.com"], None),
]


def seed_demo() -> tuple[Client, User, bool]:
    """Create the demo MSP, its two sub-clients and its admin unless they exist.
    Returns (msp, admin, created_anything)."""
    created = False
    msp = clients.get_msp_by_name(DEMO_MSP)
    if msp is None:
        msp = clients.create_msp(
            clients.ClientInput(name=DEMO_MSP, code="DEMO", reference_prefix="T",
                                waterline="## Please reply above this line ##")
        )
        created = True
    for name, code, allow, waterline in DEMO_CLIENTS:
        if clients.get_client_by_name(msp.id, name) is None:
            clients.create_client(
                msp, clients.ClientInput(name=name, code=code, allow=allow, waterline=waterline or ""), None
            )
            created = True
    admin = users.get_user_by_email(DEMO_ADMIN)
    if admin is None:
        admin = users.create_user(msp, DEMO_ADMIN, DEMO_PASSWORD, "admin", None, name="Demo Admin")
        created = True
    return msp, admin, created

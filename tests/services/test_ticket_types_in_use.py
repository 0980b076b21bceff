"""The types offered on the ticket page: those the MSP's tickets have, each once, in order, at
most TYPES_OFFERED, never another MSP's (read one index probe a type: migration 0023)."""

from portal.extensions import db
from portal.models import Ticket
from portal.services import commit
from portal.services import tickets as svc


def typed(msp, client, types, start=1):
    for i, kind in enumerate(types, start):
        db.session.add(Ticket(msp_id=msp.id, number=i, reference=f"T-{i}", client_id=client.id, subject="s",
                              type=kind))
    commit()


def test_each_type_in_use_once_in_order_and_only_this_msps(world):
    acme, other = world.msp("Acme MSP"), world.msp("Other MSP")
    typed(acme, world.client(acme, "Contoso"), ["request", None, "incident", "request", "change", None, "incident"])
    typed(other, other, ["zebra", "alarm"])
    assert svc.types_in_use(acme.id) == ["change", "incident", "request"]
    assert svc.types_in_use(other.id) == ["alarm", "zebra"]
    assert svc.types_in_use(world.msp("Empty MSP").id) == []


def test_at_most_the_first_types_offered(world, monkeypatch):
    acme = world.msp("Acme MSP")
    typed(acme, acme, [f"type {i:03d}" for i in reversed(range(12))] * 2)
    monkeypatch.setattr(svc, "TYPES_OFFERED", 5)
    assert svc.types_in_use(acme.id) == [f"type {i:03d}" for i in range(5)]

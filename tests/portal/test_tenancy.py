"""Users of one MSP never see or change anything of another: every id of another tree is 404."""

import pytest
from sqlalchemy import select

from portal.models import AuditEntry, Client


@pytest.fixture
def two_msps(world):
    ours = world.msp("Ours MSP")
    world.user(ours, email="admin@ours.example")
    theirs = world.msp("Theirs MSP")
    their_client = world.client(theirs, "Their Customer", allow=["theirs.example"])
    return ours, theirs, their_client


# Every view that takes a client id: (method, url pattern).
PROTECTED = [
    ("GET", "/clients/{id}"),
    ("GET", "/clients/{id}/history"),
    ("GET", "/clients/{id}/edit"),
    ("POST", "/clients/{id}/edit"),
    ("POST", "/clients/{id}/disable"),
    ("POST", "/clients/{id}/enable"),
]


@pytest.mark.parametrize("method, pattern", PROTECTED)
@pytest.mark.parametrize("target", ["msp", "client"])
def test_another_msps_ids_answer_404(browser, two_msps, method, pattern, target):
    _ours, theirs, their_client = two_msps
    browser.sign_in("admin@ours.example")
    record = theirs if target == "msp" else their_client
    url = pattern.format(id=record.id)
    resp = browser.get(url) if method == "GET" else browser.post(url, {"name": "Taken over"})
    assert resp.status_code == 404


def test_nothing_of_another_msp_changes_or_shows(db, browser, two_msps):
    ours, theirs, their_client = two_msps
    browser.sign_in("admin@ours.example")
    browser.post(f"/clients/{their_client.id}/disable")
    # Creating below another MSP's client is refused: that parent is not among the choices.
    resp = browser.post("/clients/new", {"name": "Mole", "parent_id": their_client.id})
    assert resp.status_code == 422
    db.session.expire_all()
    assert db.session.get(Client, their_client.id).disabled is False
    assert db.session.scalar(select(Client).where(Client.name == "Mole")) is None
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.msp_id == theirs.id,
                                                      AuditEntry.actor_id.is_not(None))) is None
    tree = browser.get("/clients?q=their").get_data(as_text=True)
    assert "Their Customer" not in tree and "Theirs MSP" not in tree


def test_the_same_allow_entry_may_exist_in_two_msp_trees(world, two_msps):
    ours = two_msps[0]
    # Not a conflict: each MSP routes only its own mail.
    client = world.client(ours, "Our Customer", allow=["theirs.example"])
    assert [e.value for e in client.allow_entries] == ["theirs.example"]

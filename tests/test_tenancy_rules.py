"""The tree's rules in portal.tenancy, on a tree built in memory (the module never queries):
MSP → Contoso → Contoso Berlin, and a second branch Fabrikam."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from portal import tenancy
from portal.mail.allowlist import allow_list_claims, allow_list_match, domain_suffixes


@dataclass
class Node:
    id: int
    parent: Node | None = None
    waterline: str | None = None
    disabled: bool = False
    children: list[Node] = field(default_factory=list)

    @property
    def parent_id(self) -> int | None:
        return self.parent.id if self.parent else None


@dataclass
class Row:
    name: str
    shared: bool = False


@pytest.fixture
def tree() -> dict[str, Node]:
    msp = Node(1, waterline="-- msp --")
    contoso = Node(2, msp)
    berlin = Node(3, contoso, waterline="-- berlin --")
    fabrikam = Node(4, msp)
    return {"msp": msp, "contoso": contoso, "berlin": berlin, "fabrikam": fabrikam}


def test_lineage_runs_from_the_client_to_the_msp(tree):
    assert [c.id for c in tenancy.lineage(tree["berlin"])] == [3, 2, 1]
    by_id = {c.id: c for c in tree.values()}
    assert tenancy.lineage_in(3, by_id) == tenancy.lineage(tree["berlin"])
    assert tenancy.lineage_in(99, by_id) == []


def test_a_setting_comes_from_the_nearest_client_that_sets_it(tree):
    assert tenancy.inherited(tenancy.lineage(tree["berlin"]), "waterline") == "-- berlin --"
    assert tenancy.nearest(tenancy.lineage(tree["contoso"]), "waterline") is tree["msp"]
    assert tenancy.inherited(tenancy.lineage(tree["contoso"]), "waterline") == "-- msp --"
    tree["msp"].waterline = None
    assert tenancy.inherited(tenancy.lineage(tree["contoso"]), "waterline") is None  # the built-in default


def test_a_disabled_ancestor_switches_its_whole_branch_off(tree):
    assert tenancy.disabled_by(tenancy.lineage(tree["berlin"])) is None
    tree["contoso"].disabled = True
    assert tenancy.disabled_by(tenancy.lineage(tree["berlin"])) is tree["contoso"]
    assert tenancy.disabled_by(tenancy.lineage(tree["fabrikam"])) is None
    tree["berlin"].disabled = True
    assert tenancy.disabled_by(tenancy.lineage(tree["berlin"])) is tree["berlin"]  # its own flag first


def test_own_rows_then_those_ancestors_share_nearest_first(tree):
    own, kept, shared_near, shared_far = Row("own"), Row("kept"), Row("near", True), Row("far", True)
    rows = {3: [own], 2: [kept, shared_near], 1: [shared_far]}
    found = list(tenancy.shared_down(tenancy.lineage(tree["berlin"]), rows))
    assert found == [(own, tree["berlin"]), (shared_near, tree["contoso"]), (shared_far, tree["msp"])]
    # An unshared row is its owner's own.
    assert (kept, tree["contoso"]) in list(tenancy.shared_down(tenancy.lineage(tree["contoso"]), rows))


def test_descendants_are_everything_below_not_the_client_itself(tree):
    clients = list(tree.values())
    assert tenancy.descendant_ids(clients, 1) == {2, 3, 4}
    assert tenancy.descendant_ids(clients, 2) == {3}
    assert tenancy.descendant_ids(clients, 3) == set()


def test_domain_suffixes_stop_before_the_top_level_domain():
    assert domain_suffixes("a@mail.contoso.com") == ["mail.contoso.com", "contoso.com"]
    assert domain_suffixes("a@localhost") == []
    assert domain_suffixes("") == []


def test_the_address_beats_the_domain_and_the_nearest_domain_beats_its_parent():
    addresses = {"boss@mail.contoso.com": 7}
    domains = {"contoso.com": 2, "mail.contoso.com": 3}
    assert allow_list_match("boss@mail.contoso.com", addresses, domains) == (7, "boss@mail.contoso.com")
    assert allow_list_match("ann@mail.contoso.com", addresses, domains) == (3, "mail.contoso.com")
    assert allow_list_match("ann@eu.contoso.com", addresses, domains) == (2, "contoso.com")
    assert allow_list_match("ann@notcontoso.com", addresses, domains) is None
    assert list(allow_list_claims("boss@mail.contoso.com", addresses, domains)) == [
        (7, "boss@mail.contoso.com"), (3, "mail.contoso.com"), (2, "contoso.com")]
    assert tenancy.allow_list_match is allow_list_match  # one copy, two doors

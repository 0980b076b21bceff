"""The reply/signature cut never gets worse on the corpora: passed counts per (corpus, field)
may rise, never fall. Raise a floor when a change improves a figure."""
from __future__ import annotations

import pytest

from tests.corpus import corpora_root

# (corpus, field) -> minimum passed. Explained expectations count in neither column.
FLOORS = {
    ("talon", "visible_text"): 57,
    ("talon", "visible_text_weak"): 1,
    ("talon", "html"): 26,
    ("talon", "signature"): 19,
    ("talon", "text_html_same_cut"): 7,
    ("github-erp", "visible_text"): 22,
    ("github-erp", "speed"): 2,
    ("zapier-erp", "visible_text"): 20,
    ("zapier-erp", "speed"): 1,
    ("zammad", "signature_kept_above"): 13,
}

CORPORA = corpora_root()
pytestmark = pytest.mark.skipif(
    not (CORPORA / "talon").is_dir(),
    reason=f"email corpora not found at {CORPORA} (set TIDEMARK_CORPORA); cut floors not checked")


@pytest.fixture(scope="module")
def results():
    from tests.corpus.checks_cut import run_checks

    return {(r.corpus, r.field): r for r in run_checks(CORPORA)}


@pytest.mark.parametrize("key", sorted(FLOORS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_cut_figure_does_not_fall(results, key):
    assert key in results, f"{key} no longer measured"
    r = results[key]
    assert r.passed >= FLOORS[key], (
        f"{r.corpus}: {r.passed}/{r.total} {r.field} fell below {FLOORS[key]}; "
        f"failures: {r.failures[:5]}")


def test_every_measured_field_has_a_floor(results):
    assert set(results) <= set(FLOORS), f"add floors for {sorted(set(results) - set(FLOORS))}"


def test_explanations_say_why(results):
    for r in results.values():
        for file, why in r.explained.items():
            assert len(why) > 30, f"{r.corpus} {file}: explain the helpdesk reason"

"""The corpus figures may rise, never fall: passed counts per (corpus, field) for the parse and
classify checks and for the reply/signature cut. Raise a floor when a change improves a figure;
explained expectations count in neither column."""
from __future__ import annotations

import importlib

import pytest

from tests.corpus import corpora_root

FLOORS = {
    "checks_parse": {
        ("zammad", "parse.subject"): 83,
        ("zammad", "parse.from"): 76,
        ("zammad", "parse.to_cc"): 80,
        ("zammad", "parse.body"): 65,
        ("zammad", "parse.attachments"): 21,
        ("zammad", "parse.message_id"): 1,
        ("zammad", "spec"): 18,
        ("zammad", "process"): 130,
        ("zammad", "auto_response"): 7,
        ("zammad", "out_of_office"): 7,
        ("nodemailer-mailparser", "parse"): 57,
        ("spamscope-mailparser", "parse"): 42,
        ("spamscope-mailparser", "attachments"): 5,
        ("spamscope-mailparser", "defects"): 8,
        ("django-helpdesk", "parse"): 15,
        ("flufl-bounce", "bounce"): 102,
        ("flufl-bounce", "bounced_recipients"): 97,
        ("flufl-bounce", "permanent"): 100,
        ("mailbox-threads", "threading-headers"): 4,
    },
    "checks_cut": {
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
    },
}
CORPORA = corpora_root()
pytestmark = pytest.mark.skipif(
    not CORPORA.is_dir(), reason=f"email corpora not found at {CORPORA} (set TIDEMARK_CORPORA); floors not checked")


@pytest.fixture(scope="module", params=sorted(FLOORS))
def checks(request):
    module = importlib.import_module(f"tests.corpus.{request.param}")
    return request.param, {(r.corpus, r.field): r for r in module.run_checks(CORPORA)}


def test_no_figure_falls_below_its_floor(checks):
    name, results = checks
    fallen = []
    for key, floor in FLOORS[name].items():
        r = results.get(key)
        if r is None:
            fallen.append(f"{key} is no longer measured")
        elif r.passed < floor:
            fallen.append(f"{r.corpus} {r.field}: {r.passed}/{r.total} below the floor {floor}; "
                          f"failures: {r.failures[:5]}")
    assert not fallen, "\n".join(fallen)


def test_every_measured_field_has_a_floor(checks):
    name, results = checks
    assert set(results) <= set(FLOORS[name]), f"add floors for {sorted(set(results) - set(FLOORS[name]))}"


def test_explanations_say_why(checks):
    _name, results = checks
    for r in results.values():
        for file, why in r.explained.items():
            assert len(why) > 30, f"{r.corpus} {file}: explain the helpdesk reason"

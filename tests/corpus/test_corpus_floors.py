"""The parse/classify corpus figures may rise, never fall. Raise a floor when you improve it."""
import pytest

from tests.corpus import corpora_root

# (corpus, field): expectations that held when the floor was last raised.
FLOORS = {
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
}


@pytest.fixture(scope="module")
def figures():
    root = corpora_root()
    if not root.is_dir():
        pytest.skip(f"email corpora not found at {root} (set TIDEMARK_CORPORA to run these)")
    from tests.corpus.checks_parse import run_checks

    return {(r.corpus, r.field): r for r in run_checks(root)}


@pytest.mark.parametrize("key", sorted(FLOORS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_figure_does_not_fall(figures, key):
    result = figures.get(key)
    assert result is not None, f"no check produced {key}"
    assert result.passed >= FLOORS[key], (
        f"{key[0]} {key[1]}: {result.passed}/{result.total} below the floor {FLOORS[key]}\n"
        + "\n".join(result.failures[:10]))

"""`make test` runs SQLite and PostgreSQL at the same time and says how each went (README,
"Two commands"): run here on one small test file, once passing and once selecting nothing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_test(pytest_args: str, logs: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MAKE"))}
    # Its own log folder: the `make test` running this suite writes PostgreSQL's log in test-results/.
    return subprocess.run(["make", "--no-print-directory", "test", f"TEST_LOG_DIR={logs}",
                           f"PYTEST_ARGS=-p no:cacheprovider {pytest_args}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_reports_each_database_and_fails_when_one_fails(tmp_path):
    passed = make_test("tests/test_layers.py", tmp_path)
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    assert "== tests on SQLite ==" in passed.stdout
    assert "== SQLite: passed; PostgreSQL: passed or skipped ==" in passed.stdout
    # PostgreSQL's lines come after SQLite's, whether it ran or said plainly why not.
    pg = passed.stdout.find("== tests on PostgreSQL") if "== tests on PostgreSQL" in passed.stdout else \
        passed.stdout.find("== PostgreSQL skipped")
    assert pg > passed.stdout.find("== tests on SQLite ==")
    failed = make_test("tests/test_layers.py -k no_such_test_anywhere", tmp_path)  # pytest exits 5: nothing ran
    assert failed.returncode != 0
    assert "== SQLite: FAILED;" in failed.stdout

"""The property tests of the email logic (parse, MIME split, classify, cut, reference extraction)
run long: --scale times their examples of `make test` (tests/fuzzing.py), with a deadline on
each example, so that no exception escapes and no call takes more than --deadline-ms.

    .venv/bin/python -m tests.soak.fuzz [--scale 20] [--deadline-ms 5000] [--seed N]

Prints one line per property (examples asked, seconds, passed or the failure) and exits 1 on a
failure; hypothesis prints the smallest failing example and how to reproduce it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ["tests/mail/test_robustness.py", "tests/mail/test_mime.py", "tests/mail/test_refs_fuzz.py",
         "tests/mail/test_parse.py", "tests/mail/test_cut.py"]


class Recorder:
    """A pytest plugin: only the hypothesis tests, and each one's examples, time and outcome."""

    def __init__(self):
        self.rows: list[tuple[str, int, float, str]] = []
        self.examples: dict[str, int] = {}

    def pytest_collection_modifyitems(self, config, items):
        keep = [i for i in items if getattr(getattr(i, "obj", None), "is_hypothesis_test", False)]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
        for item in keep:
            chosen = getattr(item.obj, "_hypothesis_internal_use_settings", None)
            self.examples[item.nodeid] = chosen.max_examples if chosen else 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome == "failed":
            crash = getattr(report.longrepr, "reprcrash", None)
            failure = crash.message.splitlines()[0][:90] if crash else report.outcome
            self.rows.append((report.nodeid, self.examples.get(report.nodeid, 0), report.duration,
                              "passed" if report.passed else f"FAILED: {failure}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=20, help="times the examples of make test")
    ap.add_argument("--deadline-ms", type=int, default=5000, help="the longest one example may take")
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: a new one each run)")
    args = ap.parse_args(argv)
    os.environ.update(TIDEMARK_ENV="testing", TIDEMARK_FUZZ_SCALE=str(args.scale),
                      TIDEMARK_FUZZ_DEADLINE_MS=str(args.deadline_ms))
    import pytest

    recorder = Recorder()
    began = time.perf_counter()
    options = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", "--timeout=0", *FILES]
    if args.seed is not None:
        options.insert(0, f"--hypothesis-seed={args.seed}")
    os.chdir(ROOT)
    code = pytest.main(options, plugins=[recorder])
    print()
    print(f"Fuzzing the email logic: {args.scale}x the examples of make test, at most {args.deadline_ms} ms an "
          f"example ({time.perf_counter() - began:.0f} s in all)")
    print(f"{'property':<96} {'examples':>9} {'seconds':>8}  result")
    for nodeid, examples, seconds, result in recorder.rows:
        print(f"{nodeid:<96} {examples:>9,} {seconds:>8.1f}  {result}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

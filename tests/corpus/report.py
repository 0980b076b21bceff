"""Corpus report: how many corpus expectations the email layer meets, per corpus and field.

    .venv/bin/python -m tests.corpus.report [--failures]

Reads ../shared/corpora (or $TIDEMARK_CORPORA); never copies anything into the project.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from . import CheckResult, corpora_root

CHECK_MODULES = ("tests.corpus.checks_parse", "tests.corpus.checks_cut")


def collect(corpora=None) -> tuple[list[CheckResult], list[str]]:
    """All results plus notes about check modules that could not run."""
    corpora = corpora or corpora_root()
    results: list[CheckResult] = []
    notes: list[str] = []
    for name in CHECK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                notes.append(f"{name}: not present, skipped")
                continue
            raise
        try:
            results.extend(module.run_checks(corpora))
        except Exception as exc:  # one broken check module must not hide the others' figures
            notes.append(f"{name}: run_checks failed: {type(exc).__name__}: {exc}")
    return results, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--failures", action="store_true", help="list every failing expectation")
    args = ap.parse_args(argv)
    corpora = corpora_root()
    if not corpora.is_dir():
        print(f"corpora not found at {corpora} (set TIDEMARK_CORPORA)")
        return 1
    started = time.perf_counter()
    results, notes = collect(corpora)
    print(f"corpora: {corpora}")
    for note in notes:
        print(f"  {note}")
    passed = total = 0
    for r in results:
        passed += r.passed
        total += r.total
        print(f"{r.corpus}: {r.passed}/{r.total} {r.field}")
        shown = r.failures if args.failures else r.failures[:5]
        for line in shown:
            print(f"    FAIL {line}")
        if len(r.failures) > len(shown):
            print(f"    … {len(r.failures) - len(shown)} more (--failures)")
    print(f"total: {passed}/{total} in {time.perf_counter() - started:.1f}s")
    explained = [(r, f, why) for r in results for f, why in r.explained.items()]
    if explained:
        print("\nexplained deviations (the corpus expectation is wrong for a helpdesk):")
        for r, file, why in explained:
            print(f"  {r.corpus} {r.field} {file}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measurements against the public email corpora in ../shared/corpora (never copied here)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CheckResult:
    corpus: str
    field: str
    passed: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)  # "file: reason", short
    explained: dict[str, str] = field(default_factory=dict)  # file -> why the expectation is wrong for a helpdesk

    def check(self, ok: bool, file: str, reason: str = "") -> bool:
        """Count one expectation; an explained file counts in neither column."""
        if file in self.explained:
            return ok
        self.total += 1
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{file}: {reason}"[:300])
        return ok


def corpora_root() -> Path:
    """../shared/corpora seen from the project, or $TIDEMARK_CORPORA."""
    override = os.environ.get("TIDEMARK_CORPORA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpora"


def load_expected(corpora: Path, name: str) -> list[dict] | None:
    """A corpus's expected.json records, or None when that corpus is absent."""
    path = corpora / name / "expected.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))

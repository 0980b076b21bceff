"""How long the property tests (hypothesis) search: their own number of examples in `make test`;
that number times TIDEMARK_FUZZ_SCALE in `python -m tests.soak.fuzz` (make soak), where
TIDEMARK_FUZZ_DEADLINE_MS also bounds the time one example may take."""

import os

from hypothesis import HealthCheck, settings


def fuzz(examples: int) -> settings:
    scale = int(os.environ.get("TIDEMARK_FUZZ_SCALE") or 1)
    deadline = os.environ.get("TIDEMARK_FUZZ_DEADLINE_MS")
    return settings(max_examples=examples * scale, deadline=int(deadline) if deadline else None,
                    suppress_health_check=[HealthCheck.too_slow])

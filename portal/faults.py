"""Named steps of the pipeline where a soak run (tests/soak) makes the worker die as a `kill -9`
would: TIDEMARK_FAULT_AT=<step>[:<n>] (the n-th time a job reaches that step, 1 by default) is
read once when the worker starts (workers.worker). Unset, reaching a step costs one comparison."""

from __future__ import annotations

import os
import signal

STEPS = ("after-fetch", "after-commit", "before-server-action", "mid-decide", "mid-send", "after-send",
         "after-sendmail")  # the last: Graph's sendMail only

_armed: list | None = None  # [step, times left, the worker's pid]


def arm(spec: str | None) -> None:
    """Arm the hook in this process from a TIDEMARK_FAULT_AT value (None or empty: disarmed)."""
    global _armed
    if not spec:
        _armed = None
        return
    step, _, nth = spec.partition(":")
    if step not in STEPS or not (nth or "1").isdigit() or int(nth or 1) < 1:
        raise ValueError(f"TIDEMARK_FAULT_AT={spec!r}: give one of {', '.join(STEPS)}, optionally :<n>")
    _armed = [step, int(nth or 1), os.getpid()]


def reached(step: str) -> None:
    if _armed is None or _armed[0] != step:
        return
    _armed[1] -= 1
    if _armed[1]:
        return
    # The worker first (a work horse is its child), then this process: nothing of the job runs on.
    if os.getpid() != _armed[2]:
        os.kill(_armed[2], signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)

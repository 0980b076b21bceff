"""A worker's reading process: stored mail is read (portal.inbound.read.examine) in a second
process while the worker decides and writes the batch before.

Reading a message (parse, classify, fingerprint, cut, sanitise) is about a third of what a worker
does with a big fetch, and all of it is Python: a thread cannot run it beside the deciding, as
both need the interpreter's one lock. A process can. Each batch travels as (raw id, bytes) and
comes back as Prepared items; unpickling them costs the worker about a sixth of reading them.

`python -m workers.worker --reading-process` starts the process (start()); without it (a plain
worker, the portal, `flask mail`, tests that run jobs in place) reader() is None and the Decider
reads in a thread or in place. If the process dies (a message that exhausts its memory, say),
that batch is read again in place by decide_batch, where a failure is kept on its message, and
the next batch starts a new process. The process ends by itself when the worker is gone, even
after a SIGKILL.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger(__name__)

_pool: ProcessPoolExecutor | None = None
_wanted = False

# How often the reading process checks that its worker is still there.
PARENT_CHECK_SECONDS = 1.0


def start() -> None:
    """Use a reading process from now on in this process, starting it at once (its imports take
    a second, spent while the worker waits for its first job)."""
    global _wanted
    _wanted = True
    _ensure().submit(os.getpid)


def stop() -> None:
    global _pool, _wanted
    _wanted = False
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


class _Reader:
    """What the Decider submits its batches to: the reading process, started again if it died
    since the last batch."""

    def submit(self, fn, *args) -> Future:
        try:
            return _ensure().submit(fn, *args)
        except BrokenExecutor:
            log.warning("the reading process had ended; starting a new one")
            restart()
            return _ensure().submit(fn, *args)


_READER = _Reader()


def reader() -> _Reader | None:
    """Where batches are read, or None where no reading process was started."""
    return _READER if _wanted else None


def restart() -> None:
    """After the process died: the next batch starts a new one."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def pid() -> int | None:
    """The reading process's pid (started if it is not running)."""
    if not _wanted:
        return None
    return _READER.submit(os.getpid).result(timeout=60)


def _ensure() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # spawn, not fork: a fork would copy the worker's threads' locks and its open database
        # and Redis connections, which the reading process must not touch.
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_in_reading_process, initargs=(os.getpid(),))
    return _pool


def _in_reading_process(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the worker decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()  # what the imports loaded is not walked again by every full collection
    threading.Thread(target=_end_with, args=(parent,), name="parent-watch", daemon=True).start()


def _end_with(parent: int) -> None:
    """A worker killed outright cannot shut its pool down, and the pool's queue would wait for it
    forever: once the parent is gone (this process given to another), this process ends."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def result_or_none(reading: Future):
    """A reading's result; None when the reading failed it (the process died, or could not send
    a result back): the caller reads the batch again in place. Only the reading's own failure
    is caught: what interrupts the wait (the job's time limit, raised by its alarm signal in
    this thread) goes on up."""
    failure = reading.exception()
    if failure is None:
        return reading.result()
    log.warning("the reading process failed a batch (%s: %s); reading it in the worker",
                type(failure).__name__, failure)
    if isinstance(failure, BrokenProcessPool):
        restart()
    return None

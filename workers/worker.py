"""Start one RQ worker on the Tidemark queue, with RQ's scheduler for delayed and retried jobs.

    python -m workers.worker [--burst]
"""

from __future__ import annotations

import argparse
import gc
import importlib

from rq import Worker

from portal.jobs import queue, redis_connection
from workers.runtime import get_app

# Every module that holds jobs (portal.jobs.enqueue only takes functions from workers.*).
JOB_MODULES = ("workers.fetch", "workers.outbound", "workers.maintenance")


def prepare_process() -> None:
    """Load everything jobs use before RQ forks a work horse for each job: the horse starts with
    it instead of importing it again (a few tenths of a second per job), and, frozen, the cyclic
    garbage collector no longer walks it on every full collection (measured: about 1.3 s of a
    10,000-message fetch went into walking these objects again and again)."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    args = parser.parse_args(argv)
    app = get_app()
    with app.app_context():
        connection = redis_connection()
        q = queue(connection)
    prepare_process()
    Worker([q], connection=connection).work(with_scheduler=True, burst=args.burst)


if __name__ == "__main__":
    main()

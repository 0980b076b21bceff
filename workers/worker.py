"""Start one RQ worker on the Tidemark queue, with RQ's scheduler for delayed and retried jobs.

    python -m workers.worker [--burst]
"""

from __future__ import annotations

import argparse

from rq import Worker

from portal.jobs import queue, redis_connection
from workers.runtime import get_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    args = parser.parse_args(argv)
    app = get_app()
    with app.app_context():
        connection = redis_connection()
        q = queue(connection)
    Worker([q], connection=connection).work(with_scheduler=True, burst=args.burst)


if __name__ == "__main__":
    main()

"""Start one RQ worker on the Tidemark queue, with RQ's scheduler for delayed and retried jobs.

    python -m workers.worker [--burst] [--reading-process]

With --reading-process, fetched mail is read (parsed, classified, cut) in a second process while
this one decides and writes (portal.inbound.reading): one worker ingests about 1.3x as fast, if
the machine has a core to spare for it. Where every core already runs a worker, leave it off:
the two processes then compete, and the extra hand-over costs more than it gains.

A Redis outage does not end it: RQ's loop quits on one, and this process waits for Redis with
a growing pause and starts the loop again.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import re
import signal
import threading
import time
from collections import deque

from redis.exceptions import RedisError
from rq import SimpleWorker
from rq import scheduler as rq_scheduler
from rq.job_lifecycle import call_exception_handlers

from portal import faults
from portal.inbound import reading
from portal.jobs import queue, redis_connection
from workers.runtime import get_app, outage_in_words

log = logging.getLogger("rq.worker")

# The start of the description the cron gives its routine jobs (workers.cron.build_scheduler).
ROUTINE = "routine: "
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class QuietRoutineJobs(logging.Filter):
    """The cron's routine jobs (every few seconds) log at debug level, so that the worker's real
    work and every warning or error stay readable. RQ names a job by its description in the line
    that starts it and by its id in the later ones."""

    def __init__(self) -> None:
        super().__init__()
        self.job_ids: deque[str] = deque(maxlen=50)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        if ROUTINE in message:
            self.job_ids.extend(_JOB_ID.findall(message))
        elif not message.startswith("Enqueued job ") and not any(i in message for i in self.job_ids):
            return True  # only the cron logs "Enqueued job", and it enqueues nothing but routine jobs
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_routine_jobs(logger_name: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QuietRoutineJobs) for f in logger.filters):
        logger.addFilter(QuietRoutineJobs())
    if not any(isinstance(f, OutagesInOneLine) for f in logger.filters):
        logger.addFilter(OutagesInOneLine())


class OutagesInOneLine(logging.Filter):
    """RQ logs a Redis outage that ends its loop with a traceback; it is an expected fault
    (main() waits for Redis and starts again), told in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        words = outage_in_words(record.exc_info[1]) if record.exc_info else None
        if words:
            record.msg, record.args = f"{record.getMessage()}: {words}", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _run_scheduler(scheduler) -> None:
    """The body of RQ's scheduler process (in place of rq.scheduler.run): a Redis outage ends it
    in one line instead of two tracebacks, and the worker starts it again once Redis answers.
    Anything else keeps its traceback."""
    try:
        scheduler.work()
    except Exception as exc:
        words = outage_in_words(exc)
        if words is None:
            raise
        scheduler.log.warning("the scheduler stopped: %s; its worker starts it again", words)


def quiet_scheduler_outages() -> None:
    rq_scheduler.run = _run_scheduler  # RQ's scheduler process runs rq.scheduler.run

# Every module that holds jobs (portal.jobs.enqueue only takes functions from workers.*).
JOB_MODULES = ("workers.fetch", "workers.sending", "workers.maintenance", "workers.graph_push")


def prepare_process() -> None:
    """Load everything jobs use before the first job, and freeze it: the cyclic garbage collector
    no longer walks it on every full collection (measured: about 1.3 s of a 10,000-message fetch
    went into walking these objects again and again)."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    gc.freeze()


class StoppableWorker(SimpleWorker):
    """RQ's worker, remembering whether it was asked to stop (idle, RQ only raises to leave).

    Jobs run in this process, one after the other, not each in a work horse forked for it: a
    horse starts cold (SQLAlchemy configures its mappers and compiles every statement again, and
    opens a new database connection) and that cost 0.2 s of a one-message fetch, which made a
    worker fetch 3.4 pushed mailboxes a second where it now fetches 17 (tests/bench/bench_push).
    A job's time limit is RQ's alarm signal in this process."""

    asked_to_stop = False

    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)  # RQ's log handlers are there from here on
        if reading.reader() is not None:
            self.log.info("fetched mail is read in a reading process")

    def request_stop(self, signum, frame):
        self.asked_to_stop = True
        super().request_stop(signum, frame)

    def handle_exception(self, job, *exc_info):
        """A job stopped by a database or Redis outage is told in one line, not a traceback: the
        fault is expected, the mailbox shows it, and the next poll or sending run resumes."""
        words = outage_in_words(exc_info[1])
        if words is None:
            return super().handle_exception(job, *exc_info)
        self.log.warning("job %s (%s) stopped: %s; it runs again at its next turn", job.id,
                         job.description, words)
        call_exception_handlers(self._exc_handlers, job, *exc_info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    parser.add_argument("--reading-process", action="store_true",
                        help="read fetched mail in a second process (for a worker with a spare core)")
    args = parser.parse_args(argv)
    faults.arm(os.environ.get("TIDEMARK_FAULT_AT"))  # a soak run's fault hook (portal.faults)
    app = get_app()
    with app.app_context():
        connection = redis_connection()
        q = queue(connection)
    prepare_process()
    if args.reading_process:
        reading.start()
    quiet_routine_jobs("rq.worker")
    quiet_scheduler_outages()
    pause = 1.0
    while True:
        worker = StoppableWorker([q], connection=connection)
        began = time.monotonic()
        try:
            worker.work(with_scheduler=True, burst=args.burst)
        except (RedisError, OSError) as exc:  # e.g. while registering its start or its end
            log.warning("Redis went away: %s", exc)
        # RQ quits its loop on a Redis error met while a job runs, or when the job ends during
        # an outage; a stop it was asked for (SIGINT/SIGTERM) ends this process.
        if args.burst or worker.asked_to_stop:
            return
        stop = catch_stop()
        if worker.pubsub_thread is not None:  # RQ's teardown could not stop its command listener
            worker.pubsub_thread.stop()
        pause = 1.0 if time.monotonic() - began > 60 else min(pause * 2, MAX_PAUSE)
        if not wait_for_redis(connection, pause, stop):
            return
        log.warning("Redis answers again; the worker starts over")
        try:
            worker.register_death()  # the dashboard counts live workers; this one is gone
        except (RedisError, OSError):
            pass


# The longest wait between two tries to reach Redis again.
MAX_PAUSE = 30.0


def catch_stop() -> threading.Event:
    """SIGINT and SIGTERM between two runs of RQ's loop (which installs its own handlers)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for_redis(connection, pause: float, stop: threading.Event) -> bool:
    """Try Redis, waiting longer after each failure (up to MAX_PAUSE). False: asked to stop."""
    while not stop.wait(pause):
        try:
            connection.ping()
            return True
        except (RedisError, OSError) as exc:
            log.warning("Redis is unreachable (%s); trying again in %.0f s", exc, pause)
            pause = min(pause * 2, MAX_PAUSE)
    return False


if __name__ == "__main__":
    main()

"""What runs on a schedule. Run exactly one of these processes per installation:

    python -m workers.cron

Every job it enqueues is idempotent, so a missed or doubled tick does no harm. A Redis outage
does not end it: it waits for Redis and starts again.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rq.cron import CronScheduler

from portal.jobs import redis_connection
from portal.inbound.graph_push import RENEW_EVERY
from workers import fetch, graph_push, maintenance, sending
from workers.runtime import get_app
from workers.worker import MAX_PAUSE, ROUTINE, catch_stop, quiet_routine_jobs, wait_for_redis

log = logging.getLogger("rq.cron")

# (job, seconds between runs)
SCHEDULE = [
    (fetch.enqueue_due_fetches, 10),
    (sending.send_due, 30),  # retries come due; everything new is sent right after its fetch
    (maintenance.prune_sign_in_failures, 3600),
    (maintenance.alert_expiring_sign_ins, 3600),  # the thresholds are days apart: an hour late is on time
    (maintenance.purge_old_mail, 3600),
    (graph_push.keep_graph_subscriptions, RENEW_EVERY),  # Graph notifications: renewed a day before expiry
    (maintenance.alert_service_levels, 60),  # SLA warnings and breaches: each ticket's thresholds once  # retention is counted in days; each run does a bounded batch
]


def build_scheduler(connection, queue_name: str) -> CronScheduler:
    scheduler = CronScheduler(connection=connection, name="tidemark-cron")
    for func, interval in SCHEDULE:
        job = scheduler.register(func, queue_name, interval=interval, failure_ttl=3600, result_ttl=0)
        # Marked, so that the worker logs them at debug level (workers.worker.QuietRoutineJobs).
        job.job_options["description"] = f"{ROUTINE}{func.__module__}.{func.__name__}()"
    return scheduler


def main() -> None:
    app = get_app()
    with app.app_context():
        connection = redis_connection()
        queue_name = app.config["TIDEMARK_QUEUE"]
    quiet_routine_jobs("rq.cron")
    pause = 1.0
    while True:
        began = time.monotonic()
        try:
            build_scheduler(connection, queue_name).start()
            return  # it returns when asked to stop (SIGINT/SIGTERM)
        except (RedisError, OSError) as exc:
            log.warning("Redis went away: %s", exc)
        # A Redis outage ends RQ's scheduler loop: wait for Redis, then start it again.
        pause = 1.0 if time.monotonic() - began > 60 else min(pause * 2, MAX_PAUSE)
        if not wait_for_redis(connection, pause, catch_stop()):
            return


if __name__ == "__main__":
    main()

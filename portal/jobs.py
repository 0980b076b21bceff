"""The enqueue API. Jobs are named by dotted string (workers.*) so the portal never imports the
workers, and are pushed to Redis only after the database commit that made them necessary:
a job must never run against rows that a rollback took back.

With TIDEMARK_JOBS_SYNC=1 they run inline, in order, right after that commit.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import JobStatus

from portal.extensions import db

log = logging.getLogger(__name__)

_PENDING = "tidemark_pending_jobs"


@dataclass
class JobRequest:
    func: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    # RQ's own enqueue options: job_id, unique, retry, result_ttl, failure_ttl, job_timeout.
    options: dict[str, Any] = field(default_factory=dict)


def redis_connection() -> Redis:
    return Redis.from_url(current_app.config["REDIS_URL"], socket_connect_timeout=5)


def queue(connection: Redis | None = None) -> Queue:
    return Queue(current_app.config["TIDEMARK_QUEUE"], connection=connection or redis_connection())


RQ_OPTIONS = {"job_id", "unique", "retry", "result_ttl", "failure_ttl", "job_timeout"}


def enqueue(func: str, *args, options: dict[str, Any] | None = None, **kwargs) -> None:
    """Queue a job for after the next commit. Arguments are ids and plain values, never models.
    `options` go to RQ; `unique` with a fixed job_id: a job already there is not queued twice."""
    if not func.startswith("workers."):
        raise ValueError(f"jobs live in workers.*, not {func}")
    unknown = set(options or {}) - RQ_OPTIONS
    if unknown:
        raise ValueError(f"unknown enqueue options: {', '.join(sorted(unknown))}")
    db.session.info.setdefault(_PENDING, []).append(JobRequest(func, args, kwargs, dict(options or {})))


def discard_pending() -> None:
    db.session.info.pop(_PENDING, None)


def dispatch_pending() -> None:
    pending: list[JobRequest] = _once(db.session.info.pop(_PENDING, []))
    if not pending:
        return
    if current_app.config["TIDEMARK_JOBS_SYNC"]:
        for req in pending:
            run_inline(req.func, *req.args, **req.kwargs)
        return
    q = queue()
    for req in pending:
        try:
            q.enqueue(req.func, args=req.args, kwargs=req.kwargs, **req.options)
        except DuplicateJobError:
            if not _replace_if_dead(q, req.options["job_id"]):
                continue  # the same job is waiting or running: once is enough
            try:
                q.enqueue(req.func, args=req.args, kwargs=req.kwargs, **req.options)
            except DuplicateJobError:
                pass  # another process queued it again first


# A job with a fixed id in one of these states will never run again, yet holds its id.
_ENDED = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED}


def _replace_if_dead(q: Queue, job_id: str) -> bool:
    """Delete the job holding `job_id` if it will never run again: it ended (a failed one is
    kept for a while), or it was started by a worker that is gone. A job with a fixed id holds
    the lock of the same name (`exclusive`), which its heartbeat renews: when the lock has been
    gone for longer than its ttl, so has the job's process. (RQ finds out too, but only some
    90 s after its worker stopped reporting.) True: the id is free for a new job."""
    job = q.fetch_job(job_id)
    if job is None:
        return True
    status = job.get_status(refresh=False)
    if status == JobStatus.STARTED:
        q.started_job_registry.cleanup()
        status = job.get_status(refresh=True)
    if status == JobStatus.STARTED and not _still_running(q.connection, job):
        status = None
    if status is not None and status not in _ENDED:
        return False
    log.warning("job %s was %s; queueing it again", job_id, status.value if status else "lost")
    job.delete()
    return True


def _once(pending: list[JobRequest]) -> list[JobRequest]:
    """A unique job asked for several times in one transaction runs once, as RQ would queue it."""
    seen, kept = set(), []
    for req in pending:
        key = req.options.get("job_id") if req.options.get("unique") else None
        if key is not None and key in seen:
            continue
        seen.add(key)
        kept.append(req)
    return kept


def run_inline(func: str, *args, **kwargs):
    module, _, name = func.rpartition(".")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def _still_running(connection: Redis, job) -> bool:
    if connection.exists(LOCK_PREFIX + job.id):
        return True
    # Just started: it may not have taken its lock yet.
    ttl = current_app.config["TIDEMARK_LOCK_SECONDS"]
    return job.started_at is not None and datetime.now(timezone.utc) - job.started_at < timedelta(seconds=ttl)


LOCK_PREFIX = "tidemark:lock:"


def held(names: list[str]) -> set[str]:
    """Which of these locks have a live holder now (its heartbeat renews them). One quick try:
    when Redis does not answer, none."""
    connection = Redis.from_url(current_app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1,
                                retry=Retry(NoBackoff(), 0))
    try:
        with connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(LOCK_PREFIX + name)
            return {name for name, found in zip(names, pipe.execute()) if found}
    except (RedisError, OSError):
        return set()
    finally:
        connection.close()


@contextmanager
def exclusive(name: str, ttl: int | None = None, connection: Redis | None = None):
    """A lock held in Redis, so that two workers do not do the same thing at once (e.g. fetch
    one mailbox). Yields False, doing nothing, when another holder has it. A heartbeat thread
    renews it every third of its ttl (TIDEMARK_LOCK_SECONDS) while the holder lives, so the
    lock of a killed worker is free again within the ttl; if Redis lost it (a restart), the
    heartbeat takes it back unless someone else has it now. Release only removes our own
    token. It saves work; what must not happen twice is guarded by the database."""
    connection = connection or redis_connection()
    ttl = ttl or current_app.config["TIDEMARK_LOCK_SECONDS"]
    key = LOCK_PREFIX + name
    token = uuid.uuid4().hex
    if not connection.set(key, token, nx=True, ex=ttl):
        yield False
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(connection, key, token, ttl, stop), name=f"lock {name}",
                            daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            connection.eval(_RELEASE, 1, key, token)
        except RedisError:
            log.warning("could not release the lock %s; it expires within %s s", name, ttl)


def _heartbeat(connection: Redis, key: str, token: str, ttl: int, stop: threading.Event) -> None:
    while not stop.wait(ttl / 3):
        try:
            connection.eval(_RENEW, 1, key, token, ttl)
        except RedisError:
            pass  # Redis is away: the next beat tries again


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_RENEW = """
local held = redis.call('get', KEYS[1])
if held == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
if not held then redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0
"""

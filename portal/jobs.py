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
from rq.job import Job, JobStatus

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


# What a request asks of Redis on the side (publish to live pages, count a stream in, "is
# replying") must not hold the request: half a second, and no retries.
QUICK_TIMEOUT = 0.5


def app_redis(*, quick: bool = False) -> Redis:
    """The app's own Redis client, made once: its pool of connections serves every request (a
    page that asks every few seconds, live pages), instead of a new pool each time. `quick`: one
    that gives up within QUICK_TIMEOUT, for what is only a courtesy to other pages."""
    app = current_app._get_current_object()
    url = app.config["REDIS_URL"]
    made = app.extensions.setdefault("tidemark_redis", {})
    if (url, quick) not in made:
        made[url, quick] = Redis.from_url(url, socket_connect_timeout=QUICK_TIMEOUT, socket_timeout=QUICK_TIMEOUT,
                                          retry=Retry(NoBackoff(), 0)) if quick else redis_connection()
    return made[url, quick]


def queue(connection: Redis | None = None) -> Queue:
    # The app's shared client: a new one per commit cost a TCP connection and a handshake for
    # every job queued (most of the time an LMTP delivery took).
    return Queue(current_app.config["TIDEMARK_QUEUE"], connection=connection or app_redis())


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


def pending_count(session=None) -> int:
    """How many jobs wait for the next commit of this session (the request's by default)."""
    return len((session or db.session).info.get(_PENDING, []))


def keep_pending(count: int, session=None) -> None:
    """Forget the jobs queued after the first `count` (a savepoint that asked for them was rolled back)."""
    del (session or db.session).info.get(_PENDING, [])[count:]


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
        _push(q, req)


def enqueue_now(func: str, *args, options: dict[str, Any] | None = None, connection: Redis | None = None) -> str:
    """Queue a job at once, outside any transaction (a process that changes no rows, such as the
    IMAP IDLE watcher). Says what became of it: "queued"; "waiting", the same unique job waits
    in the queue (it will see what this one would have); "running", the same unique job is under
    way (it may have looked before what this one was asked for: ask again when it ends)."""
    if not func.startswith("workers."):
        raise ValueError(f"jobs live in workers.*, not {func}")
    req = JobRequest(func, args, {}, dict(options or {}))
    return _push(queue(connection), req)


def _push(q: Queue, req: JobRequest) -> str:
    if req.options.get("unique") and _waiting(q, req.options["job_id"]):
        # One round trip instead of RQ's refused enqueue and two reads of the job: the job has
        # not started, so it will see what was committed before this call.
        return "waiting"
    try:
        q.enqueue(req.func, args=req.args, kwargs=req.kwargs, **req.options)
        return "queued"
    except DuplicateJobError:
        if not _replace_if_dead(q, req.options["job_id"]):
            # the same job is waiting or running: once is enough
            job = q.fetch_job(req.options["job_id"])
            started = job is not None and job.get_status(refresh=False) == JobStatus.STARTED
            return "running" if started else "waiting"
        try:
            q.enqueue(req.func, args=req.args, kwargs=req.kwargs, **req.options)
            return "queued"
        except DuplicateJobError:
            return "waiting"  # another process queued it again first


def _waiting(q: Queue, job_id: str) -> bool:
    return q.connection.hget(Job.key_for(job_id), "status") == JobStatus.QUEUED.value.encode()


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
    try:
        job.delete()
    except ValueError:
        # RQ lists a run of the job whose record Redis no longer has (lost in a restart, or
        # expired), and will not delete the job until that list is gone.
        q.connection.delete(job.execution_registry.key)
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

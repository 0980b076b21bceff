"""The enqueue API. Jobs are named by dotted string (workers.*) so the portal never imports the
workers, and are pushed to Redis only after the database commit that made them necessary:
a job must never run against rows that a rollback took back.

With TIDEMARK_JOBS_SYNC=1 they run inline, in order, right after that commit.
"""

from __future__ import annotations

import importlib
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue
from rq.exceptions import DuplicateJobError

from portal.extensions import db

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
            pass  # the same job is already waiting: once is enough


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


@contextmanager
def exclusive(name: str, ttl: int, connection: Redis | None = None):
    """A lock held in Redis, so that two workers never do the same thing at once (e.g. fetch
    one mailbox). Yields False, doing nothing, when another holder has it. The ttl frees it
    if the holder dies; release only removes our own token."""
    connection = connection or redis_connection()
    key = f"tidemark:lock:{name}"
    token = uuid.uuid4().hex
    if not connection.set(key, token, nx=True, ex=ttl):
        yield False
        return
    try:
        yield True
    finally:
        connection.eval(_RELEASE, 1, key, token)


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

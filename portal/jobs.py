"""The enqueue API. Jobs are named by dotted string (workers.*) so the portal never imports the
workers, and are pushed to Redis only after the database commit that made them necessary:
a job must never run against rows that a rollback took back.

With TIDEMARK_JOBS_SYNC=1 they run inline, in order, right after that commit.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue, Retry

from portal.extensions import db

_PENDING = "tidemark_pending_jobs"


@dataclass
class JobRequest:
    func: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    retry: Retry | None = None
    failure_ttl: int | None = None
    job_timeout: int | None = None


def redis_connection() -> Redis:
    return Redis.from_url(current_app.config["REDIS_URL"], socket_connect_timeout=5)


def queue(connection: Redis | None = None) -> Queue:
    return Queue(current_app.config["TIDEMARK_QUEUE"], connection=connection or redis_connection())


def enqueue(func: str, *args, job_id: str | None = None, retry: Retry | None = None,
            failure_ttl: int | None = None, job_timeout: int | None = None, **kwargs) -> None:
    """Queue a job for after the next commit. Arguments are ids and plain values, never models."""
    if not func.startswith("workers."):
        raise ValueError(f"jobs live in workers.*, not {func}")
    db.session.info.setdefault(_PENDING, []).append(
        JobRequest(func, args, kwargs, job_id, retry, failure_ttl, job_timeout)
    )


def discard_pending() -> None:
    db.session.info.pop(_PENDING, None)


def dispatch_pending() -> None:
    pending: list[JobRequest] = db.session.info.pop(_PENDING, [])
    if not pending:
        return
    if current_app.config["TIDEMARK_JOBS_SYNC"]:
        for req in pending:
            run_inline(req.func, *req.args, **req.kwargs)
        return
    q = queue()
    for req in pending:
        q.enqueue(
            req.func, *req.args, kwargs=req.kwargs, job_id=req.job_id, retry=req.retry,
            failure_ttl=req.failure_ttl, job_timeout=req.job_timeout,
        )


def run_inline(func: str, *args, **kwargs):
    module, _, name = func.rpartition(".")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)

"""One Flask app per worker process and an app context per job: commit on success, roll back
and re-raise on failure, so that RQ's Retry sees the error."""

from __future__ import annotations

import functools
import os

from flask import Flask, current_app, has_app_context
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portal.app import create_app
from portal.extensions import db
from portal.jobs import discard_pending
from portal.services import commit, database_unreachable

_app: Flask | None = None
_app_pid: int | None = None


def get_app() -> Flask:
    global _app, _app_pid
    if _app is None:
        _app = create_app(migrations=False)
        _app_pid = os.getpid()
    elif _app_pid != os.getpid():
        # A forked job process must not share the parent's database connections.
        with _app.app_context():
            db.engine.dispose(close=False)
        _app_pid = os.getpid()
    return _app


def job(fn):
    """Run fn inside an app context (the caller's, when run inline) and commit its work."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if has_app_context():
            return _in_transaction(fn, args, kwargs)
        with get_app().app_context():
            return _in_transaction(fn, args, kwargs)

    return run


def _in_transaction(fn, args, kwargs):
    try:
        result = fn(*args, **kwargs)
        commit()
        return result
    except BaseException:
        db.session.rollback()
        discard_pending()
        raise


def outage_in_words(exc: BaseException) -> str | None:
    """The database or Redis could not be reached (a restart, a network cut): an expected fault,
    which the next poll or sending run rides out, told in one line and not as a traceback. None
    for anything else, which keeps its traceback."""
    if words := database_unreachable(exc):
        return words
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return f"Redis could not be reached ({exc})"
    return None


__all__ = ["current_app", "get_app", "job", "outage_in_words"]

"""One commit per request or command, at one place. Services flush but never commit; the work
of a request is committed once, after its view has answered:

- an answer below 400 commits (portal.services.commit(), which then dispatches the jobs the
  request queued), when the session wrote something that is still there or queued a job (a
  job asked for by a request that wrote nothing, "Fetch now", is dispatched too);
- an answer of 400 or more commits nothing: a form refused with 422 leaves the database as it was;
- an exception rolls back (and the 500 page says so).

A savepoint rolled back takes back its writes and the jobs queued inside it (a dry run).
A flask command that writes is marked @commits: it commits once when it returns; a refusal
(SystemExit) or an error commits nothing. The few views and commands that commit earlier say
why next to their commit(). Workers commit per job in workers.runtime.job.
"""

from __future__ import annotations

import functools

from flask import Flask, Response
from sqlalchemy import event

from portal.extensions import db
from portal.jobs import discard_pending, keep_pending, pending_count
from portal.services import commit

# session.info keys: whether the transaction holds writes, and that answer and the number of
# queued jobs when each open savepoint began (its rollback takes back what came after it).
_WROTE = "tidemark_wrote"
_AT_SAVEPOINT = "tidemark_wrote_at_savepoint"


def init_app(app: Flask) -> None:
    _watch_writes()
    app.after_request(_commit_success)
    app.teardown_request(_forget_uncommitted)


def _commit_success(response: Response) -> Response:
    if response.status_code < 400 and (has_writes() or pending_count()):
        commit()
    return response


def _forget_uncommitted(exc: BaseException | None) -> None:
    if exc is not None:
        db.session.rollback()
    discard_pending()


def commits(command):
    """For a flask command that writes: commit (and dispatch the queued jobs) once, when it
    returns. Raising, SystemExit included, commits nothing: the app context's end rolls back."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        result = command(*args, **kwargs)
        commit()
        return result

    return run


# --- what the session wrote ------------------------------------------------------------------------


def has_writes() -> bool:
    """Whether the session's transaction holds changes: objects not flushed yet, or rows
    flushed or written by an INSERT, UPDATE or DELETE statement and not rolled back since."""
    session = db.session
    return bool(session.new or session.dirty or session.deleted or session.info.get(_WROTE))


def _watch_writes() -> None:
    if event.contains(db.session, "after_flush", _flushed):
        return  # every app of the process shares the one session factory
    event.listen(db.session, "after_flush", _flushed)
    event.listen(db.session, "do_orm_execute", _executed)
    event.listen(db.session, "after_transaction_create", _began)
    event.listen(db.session, "after_soft_rollback", _rolled_back)
    event.listen(db.session, "after_transaction_end", _ended)


def _flushed(session, _flush_context) -> None:
    session.info[_WROTE] = True


def _executed(state) -> None:
    # An UPDATE written as text (the write lock on SQLite, see fetching.hold_mailbox) changes nothing.
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def _began(session, transaction) -> None:
    if transaction.nested:
        at_start = (session.info.get(_WROTE, False), pending_count(session))
        session.info.setdefault(_AT_SAVEPOINT, {})[transaction] = at_start


def _rolled_back(session, previous_transaction) -> None:
    if previous_transaction.nested:
        at_start = session.info.get(_AT_SAVEPOINT, {}).pop(previous_transaction, None)
        session.info[_WROTE], queued = at_start or (False, pending_count(session))
        keep_pending(queued, session)


def _ended(session, transaction) -> None:
    if transaction.parent is None:  # committed, rolled back or closed: nothing is held any more
        session.info.pop(_WROTE, None)
        session.info.pop(_AT_SAVEPOINT, None)

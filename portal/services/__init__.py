"""Writes and decisions per area. Services flush but never commit: the caller commits once,
through portal.services.commit(), which also dispatches queued jobs: portal.unit_of_work after
a request or a flask command, workers.runtime after a job."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from portal.extensions import db
from portal.jobs import dispatch_pending


class ValidationError(Exception):
    """Input a person can fix: field name -> messages ("" for the form as a whole)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k or 'form'}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def checked_date(value: Any, errors: dict[str, list[str]], key: str) -> date | None:
    """A date typed in a form or a configuration file (2027-06-30); a message under `key` otherwise."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        errors.setdefault(key, []).append(f"{value!r} is not a date like 2027-06-30.")
        return None


def commit() -> None:
    db.session.commit()
    dispatch_pending()


def database_unreachable(exc: BaseException) -> str | None:
    """The database could not be reached (a restart, a network cut), in words; None for any
    other error. A server-side error (a constraint, a deadlock) has an SQLSTATE; a lost or
    refused connection has none."""
    if isinstance(exc, DisconnectionError) or (
            isinstance(exc, (OperationalError, InterfaceError)) and isinstance(exc, DBAPIError)
            and (exc.connection_invalidated or getattr(exc.orig, "sqlstate", "") is None)):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the database could not be reached ({detail[0] if detail else type(exc).__name__})"
    return None


def containing(text: str) -> str:
    """A LIKE pattern for text anywhere, its own % and _ taken literally (use with escape="\\")."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

"""Scratch databases for the benchmarks: a SQLite file, or a uniquely named PostgreSQL database
created on the given server and dropped afterwards."""

from __future__ import annotations

import contextlib
import io
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


class ScratchDatabase:
    """A fresh, empty database: a SQLite file in a temp dir or a scratch PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, pg_url: str, prefix: str = "tidemark_bench"):
        self.kind = kind
        self._admin = None
        self._name = None
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / f'tidemark-{uuid.uuid4().hex[:8]}.sqlite3'}"
            return
        server = make_url(pg_url)
        self._name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self._name}"'))
        self.url = server.set(database=self._name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        self._admin.dispose()
        self._admin = None


def pg_unreachable(pg_url: str) -> str | None:
    try:
        import psycopg

        plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        psycopg.connect(plain, connect_timeout=3).close()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip PostgreSQL
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def migrate_quietly() -> None:
    """Alembic's upgrade in the current app context. Its per-step INFO lines would drown the
    figures, so they are shown only if it fails."""
    from flask_migrate import upgrade

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter):
            upgrade()
    except BaseException:
        sys.stderr.write(chatter.getvalue())
        raise

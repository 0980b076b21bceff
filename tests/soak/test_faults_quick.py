"""The fault harness in its quickest form (`make soak` runs it whole): real Dovecot, the local
Graph server, aiosmtpd, a private Redis and the real worker and cron processes on PostgreSQL; the
worker killed by its fault hook after a commit, then PostgreSQL refusing connections mid-fetch
through the gate. Nothing lost, doubled or sent twice, no traceback, healed without a person."""

import os

import pytest

from tests.soak import faults

URL = os.environ.get("TEST_DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not URL.startswith("postgresql"),
    reason="the fault harness runs on PostgreSQL only: it refuses the database's TCP connections through a "
           "gate, and its workers are separate processes sharing one database server (SQLite has neither)")


def test_a_worker_killed_after_a_commit_and_a_database_refusing_connections_lose_and_double_nothing():
    args = faults.parse_args(["--messages", "50", "--graph-messages", "10", "--only",
                              "after-commit,postgresql-refuses-mid-fetch", "--refuse-seconds", "3",
                              "--lock-seconds", "3", "--heal-timeout", "180", "--pg-url", URL])
    assert faults.cannot_run(args) is None
    rounds = faults.run(args)
    assert [r.name for r in rounds] == ["SIGKILL after commit", "PostgreSQL refuses mid-fetch"]
    for r in rounds:
        row = r.row
        assert (row["lost"], row["duplicates"], row["sent twice"], row["tracebacks"]) == (0, 0, 0, 0), r.notes
        assert row["stored"] == row["on server"] == 60, r.notes
        assert row["tickets"] > 0 and row["acks sent"] == row["tickets"], r.notes
        assert r.healthy_after is not None and not faults.failed(r), r.notes

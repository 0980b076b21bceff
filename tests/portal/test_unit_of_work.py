"""One commit per request or command, at one place (portal.unit_of_work): an answer below 400
commits what the request wrote and then dispatches its jobs; 4xx and 5xx commit nothing; an
exception rolls back. Views made for the test write sign-in failure rows (no other row needed),
and what was kept is read through a connection of its own, as the next request would see it."""

from __future__ import annotations

from datetime import timedelta

import click
import pytest
from flask.cli import with_appcontext
from sqlalchemy import delete, event, func, select

from portal import jobs
from portal.extensions import db
from portal.models import SignInFailure
from portal.models.base import utcnow
from portal.unit_of_work import commits

JOB = "workers.maintenance.prune_sign_in_failures"


def _write(email: str = "kept@example.com", days: int = 0) -> None:
    db.session.add(SignInFailure(email=email, ip="127.0.0.1", at=utcnow() - timedelta(days=days)))
    db.session.flush()


def _kept() -> list[str]:
    """The rows committed, read from a connection of its own (not the test's session)."""
    with db.engine.connect() as conn:
        return sorted(conn.scalars(select(SignInFailure.email)))


@pytest.fixture
def commits_seen(app):
    seen: list[int] = []

    def count(session):
        seen.append(len(jobs.queue().job_ids))  # how many jobs Redis had when the commit happened

    event.listen(db.session, "after_commit", count)
    yield seen
    event.remove(db.session, "after_commit", count)


@pytest.fixture
def signed_in(app, world, browser):
    """Views of the test's own (added before the first request), and an admin signed in."""

    def refused():
        _write()
        return "not like this", 422

    def done():
        _write()
        jobs.enqueue(JOB, options={"job_id": "uow-test"})
        return "done"

    def queued():
        jobs.enqueue(JOB, options={"job_id": "uow-test"})
        return "queued, nothing written"

    def deleted():
        db.session.execute(delete(SignInFailure).where(SignInFailure.email == "old@example.com"))
        return "deleted"

    def failed():
        _write()
        raise RuntimeError("the view broke")

    def dry_run():
        savepoint = db.session.begin_nested()
        _write()
        jobs.enqueue(JOB, options={"job_id": "uow-test"})
        savepoint.rollback()
        return "nothing kept"

    for view in (refused, done, queued, deleted, failed, dry_run):
        app.add_url_rule(f"/test-uow/{view.__name__}", view.__name__, view, methods=["POST"])
    app.add_url_rule("/test-uow/read", "read", lambda: str(len(_kept())))
    admin = world.user(world.msp("Acme MSP"), email="ana@acme.example")
    browser.sign_in(admin.email)
    return browser


def test_a_refused_form_commits_nothing(signed_in, commits_seen):
    resp = signed_in.post("/test-uow/refused")
    assert resp.status_code == 422
    assert commits_seen == []
    assert _kept() == []


def test_a_success_commits_once_then_sends_its_jobs(app, redis, signed_in, commits_seen):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    resp = signed_in.post("/test-uow/done")
    assert resp.status_code == 200
    assert commits_seen == [0]  # one commit, and no job in Redis when it happened
    assert _kept() == ["kept@example.com"]
    assert jobs.queue(redis).job_ids == ["uow-test"]


def test_a_job_asked_for_by_a_request_that_wrote_nothing_is_sent_too(app, redis, signed_in):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    assert signed_in.post("/test-uow/queued").status_code == 200
    assert jobs.queue(redis).job_ids == ["uow-test"]


def test_synchronous_jobs_run_after_the_commit(signed_in, commits_seen):
    with db.engine.begin() as conn:  # a failure old enough for the job to prune
        conn.execute(SignInFailure.__table__.insert().values(email="old@example.com", ip="127.0.0.1",
                                                             at=utcnow() - timedelta(days=40)))
    resp = signed_in.post("/test-uow/done")
    assert resp.status_code == 200
    assert _kept() == ["kept@example.com"]  # the request's row, and the job's delete, committed
    assert len(commits_seen) == 2  # the request's, then the job's own (workers.runtime.job)


def test_a_delete_statement_is_a_write_too(signed_in, commits_seen):
    with db.engine.begin() as conn:
        conn.execute(SignInFailure.__table__.insert().values(email="old@example.com", ip="127.0.0.1", at=utcnow()))
    assert signed_in.post("/test-uow/deleted").status_code == 200
    assert len(commits_seen) == 1
    assert _kept() == []


def test_an_exception_rolls_back(app, signed_in, commits_seen):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # the 500 page, as in production
    resp = signed_in.post("/test-uow/failed")
    assert resp.status_code == 500
    assert commits_seen == []
    assert _kept() == []
    assert db.session.scalar(select(func.count()).select_from(SignInFailure)) == 0  # rolled back, not pending


def test_a_rolled_back_savepoint_leaves_nothing_to_commit(app, redis, signed_in, commits_seen):
    """A dry run (the routing check, the import preview) answers 200 and commits nothing: the
    jobs it asked for inside the savepoint are not sent."""
    app.config["TIDEMARK_JOBS_SYNC"] = False
    assert signed_in.post("/test-uow/dry_run").status_code == 200
    assert commits_seen == []
    assert jobs.queue(redis).count == 0


def test_a_page_that_only_reads_commits_nothing(signed_in, commits_seen):
    assert signed_in.get("/test-uow/read").status_code == 200
    assert commits_seen == []


# --- flask commands ------------------------------------------------------------------------------


@click.command("write")
@click.option("--refuse", is_flag=True)
@with_appcontext
@commits
def write_command(refuse: bool) -> None:
    _write()
    jobs.enqueue(JOB, options={"job_id": "uow-test"})
    if refuse:
        raise SystemExit(1)


def test_a_command_commits_once_when_it_returns(app, redis, commits_seen):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    result = app.test_cli_runner().invoke(write_command)
    assert result.exit_code == 0, result.output
    assert commits_seen == [0]
    assert _kept() == ["kept@example.com"]
    assert jobs.queue(redis).job_ids == ["uow-test"]


def test_a_command_that_exits_commits_nothing(app, redis, commits_seen):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    result = app.test_cli_runner().invoke(write_command, ["--refuse"])
    assert result.exit_code == 1
    assert commits_seen == []
    assert _kept() == []

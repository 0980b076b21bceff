"""Jobs go through the real Redis and a real (burst) worker."""

from datetime import timedelta

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from portal import jobs
from portal.extensions import db
from portal.models import SignInFailure
from portal.models.base import utcnow
from portal.services import commit
from portal.outbound.outbox import SEND_JOB
from workers.cron import build_scheduler


def _failures(ages_in_days):
    for days in ages_in_days:
        db.session.add(SignInFailure(email="x@y.example", ip="127.0.0.1", at=utcnow() - timedelta(days=days)))
    db.session.commit()


def _count():
    return db.session.scalar(select(func.count()).select_from(SignInFailure))


def test_job_round_trip_through_redis_and_a_burst_worker(app, redis):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    _failures([0, 3, 5])
    jobs.enqueue("workers.maintenance.prune_sign_in_failures", options={"job_id": "prune-test"})
    assert jobs.queue(redis).count == 0  # nothing is sent before the commit
    commit()
    q = jobs.queue(redis)
    assert q.job_ids == ["prune-test"]
    SimpleWorker([q], connection=redis).work(burst=True)
    job = q.fetch_job("prune-test")
    assert job.is_finished and job.return_value() == 2
    db.session.expire_all()
    assert _count() == 1


def test_jobs_of_a_rolled_back_request_are_never_sent(app, redis, browser):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    jobs.enqueue("workers.maintenance.prune_sign_in_failures")
    db.session.rollback()
    jobs.discard_pending()
    commit()
    assert jobs.queue(redis).count == 0


def test_sync_mode_runs_jobs_inline_after_the_commit(app):
    _failures([4])
    jobs.enqueue("workers.maintenance.prune_sign_in_failures")
    assert _count() == 1
    commit()
    db.session.expire_all()
    assert _count() == 0


def test_a_failing_job_rolls_back_and_re_raises_so_rq_can_retry(app):
    from workers.runtime import job

    @job
    def half_done():
        db.session.add(SignInFailure(email="a@b.example", ip="1.1.1.1", at=utcnow()))
        db.session.flush()
        raise RuntimeError("server went away")

    with pytest.raises(RuntimeError):
        half_done()
    assert _count() == 0


def test_only_workers_jobs_can_be_enqueued(app):
    with pytest.raises(ValueError):
        jobs.enqueue("os.system", "rm -rf /")


def test_cron_schedules_its_jobs_on_the_queue(app, redis):
    scheduler = build_scheduler(redis, app.config["TIDEMARK_QUEUE"])
    enqueued = scheduler.enqueue_jobs()
    assert sorted(c.func_name for c in enqueued) == ["workers.fetch.enqueue_due_fetches",
                                                     "workers.graph_push.keep_graph_subscriptions",
                                                     "workers.maintenance.alert_expiring_sign_ins",
                                                     "workers.maintenance.alert_service_levels",
                                                     "workers.maintenance.prune_sign_in_failures",
                                                     "workers.maintenance.purge_old_mail", SEND_JOB]
    assert jobs.queue(redis).count == 7
    assert scheduler.enqueue_jobs() == []  # not due again until the interval has passed


def test_the_worker_loads_every_job_module_and_freezes_it_before_its_first_job():
    import subprocess
    import sys
    from pathlib import Path

    from workers import worker

    holding_jobs = {f"workers.{p.stem}" for p in Path(worker.__file__).parent.glob("*.py") if "\n@job\n" in p.read_text()}
    assert set(worker.JOB_MODULES) == holding_jobs  # a new job module must be listed too
    # In a fresh interpreter: here the test modules have imported the job modules already.
    probe = ("import gc, sys; from workers import worker; before = set(sys.modules); worker.prepare_process(); "
             "print(sorted(m for m in worker.JOB_MODULES if m not in before and m in sys.modules), "
             "gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(worker.__file__).parents[1], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == f"{sorted(holding_jobs)} True"


def test_the_worker_runs_its_jobs_in_its_own_process_not_in_a_forked_work_horse(app, redis, redis_url, database_url):
    """A fresh horse per job started cold (mappers, compiled statements, a database connection):
    the jobs run one after the other in the worker itself."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.workers.test_fetch_faults import worker_env

    q = jobs.queue(redis)
    asked = [q.enqueue("os.getpid"), q.enqueue("os.getpid")]
    worker = subprocess.Popen([sys.executable, "-m", "workers.worker", "--burst"], cwd=Path(__file__).parents[2],
                              env=worker_env(app, database_url, redis_url), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0, output
    assert [job.latest_result().return_value for job in asked] == [worker.pid, worker.pid], output


def test_the_send_job_path_names_the_sender():
    import importlib

    import workers.sending

    module, _, name = SEND_JOB.rpartition(".")
    assert getattr(importlib.import_module(module), name) is workers.sending.send_due


def test_the_crons_routine_jobs_log_at_debug_level_and_real_work_at_info(app, redis, caplog):
    """`make run` shows the worker's output: the cron's jobs every 10 s would bury everything else.
    The same send job is real work when a reply enqueues it, and stays visible then."""
    import logging

    from workers.worker import QuietRoutineJobs, quiet_routine_jobs

    app.config["TIDEMARK_JOBS_SYNC"] = False
    build_scheduler(redis, app.config["TIDEMARK_QUEUE"]).enqueue_jobs()
    jobs.enqueue(SEND_JOB, options={"job_id": "11111111-2222-4333-8444-555555555555"})
    commit()
    routine_ids = [j for j in jobs.queue(redis).job_ids if not j.startswith("1111")]
    assert all(jobs.queue(redis).fetch_job(j).description.startswith("routine: ") for j in routine_ids)
    worker_log = logging.getLogger("rq.worker")
    quiet_routine_jobs("rq.worker")
    try:
        caplog.set_level(logging.INFO, logger="rq.worker")
        SimpleWorker([jobs.queue(redis)], connection=redis).work(burst=True)
        info = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
        assert "Successfully completed workers.sending.send_due() job" in info
        assert "11111111-2222-4333-8444-555555555555" in info
        assert "routine: " not in info and not any(j in info for j in routine_ids), info
        assert "enqueue_due_fetches" not in info
        # With debug logging asked for, they are there, at debug level.
        worker_log.setLevel(logging.DEBUG)
        record = logging.LogRecord("rq.worker", logging.INFO, __file__, 1, "Worker %s: %s: %s (%s)",
                                   ("w", "tidemark", "routine: x()", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"), None)
        filt = next(f for f in worker_log.filters if isinstance(f, QuietRoutineJobs))
        assert filt.filter(record) and record.levelno == logging.DEBUG
        failed = logging.LogRecord("rq.worker", logging.ERROR, __file__, 1,
                                   "job aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee failed", (), None)
        assert filt.filter(failed) and failed.levelno == logging.ERROR  # errors are never hidden
    finally:
        worker_log.filters[:] = [f for f in worker_log.filters if not isinstance(f, QuietRoutineJobs)]
        worker_log.setLevel(logging.NOTSET)


def test_a_unique_job_asked_for_again_is_queued_once_and_again_once_it_ended(app, redis):
    app.config["TIDEMARK_JOBS_SYNC"] = False
    unique = {"job_id": "prune-once", "unique": True, "failure_ttl": 300}
    ask = lambda: jobs.enqueue_now("workers.maintenance.prune_sign_in_failures", options=unique)  # noqa: E731
    assert ask() == "queued"
    for _ in range(3):  # asked again (by commits or the watcher) while it waits
        assert ask() == "waiting"
        jobs.enqueue("workers.maintenance.prune_sign_in_failures", options=unique)
        commit()
    q = jobs.queue(redis)
    assert q.job_ids == ["prune-once"]
    SimpleWorker([q], connection=redis).work(burst=True)
    assert q.fetch_job("prune-once").get_status() == "finished" and q.count == 0
    # Ended, yet its result still holds the id: the next ask frees it and queues the job again.
    assert ask() == "queued" and q.job_ids == ["prune-once"]


def test_a_database_or_redis_outage_is_told_in_one_line_and_other_errors_keep_their_traceback(app, redis, caplog):
    """Expected faults (a refused or lost connection) say so in one line; a bug, or an error the
    database itself answered, still prints its traceback."""
    import logging
    import sys

    from redis import Redis
    from sqlalchemy import create_engine, text

    from tests.dovecot import unused_port
    from workers.runtime import outage_in_words
    from workers.worker import OutagesInOneLine, StoppableWorker

    def caught(call):
        try:
            call()
        except Exception:  # noqa: BLE001 - the test looks at it
            return sys.exc_info()
        raise AssertionError("no error")

    refused = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{unused_port()}/none",
                            connect_args={"connect_timeout": 2})
    database_away = caught(lambda: refused.connect())
    redis_away = caught(lambda: Redis(port=unused_port(), socket_connect_timeout=1).ping())
    answered = caught(lambda: db.session.execute(text("SELECT * FROM no_such_table")))
    db.session.rollback()
    assert outage_in_words(database_away[1]).startswith("the database could not be reached (connection failed")
    assert outage_in_words(redis_away[1]).startswith("Redis could not be reached")
    assert outage_in_words(answered[1]) is None and outage_in_words(ValueError("a bug")) is None

    q = jobs.queue(redis)
    job = q.enqueue("workers.maintenance.prune_sign_in_failures")
    worker = StoppableWorker([q], connection=redis)
    caplog.set_level(logging.INFO, logger="rq.worker")
    worker.handle_exception(job, *database_away)
    told = [r for r in caplog.records if job.id in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING and told[0].exc_info is None
    assert "the database could not be reached" in told[0].getMessage() and "Traceback" not in told[0].getMessage()
    caplog.clear()
    worker.handle_exception(job, *answered)
    assert any("Traceback" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)

    record = logging.LogRecord("rq.worker", logging.ERROR, __file__, 1, "Worker %s: found an unhandled exception",
                               ("w1",), redis_away)
    assert OutagesInOneLine().filter(record) and record.exc_info is None and record.levelno == logging.WARNING
    assert record.getMessage().startswith("Worker w1: found an unhandled exception: Redis could not be reached")
    bug = logging.LogRecord("rq.worker", logging.ERROR, __file__, 1, "boom", (), answered)
    assert OutagesInOneLine().filter(bug) and bug.exc_info is answered


def test_a_dead_job_whose_run_redis_no_longer_has_is_replaced(app, redis):
    """A worker killed mid-job leaves its run listed on the job after the run's own record has
    expired; RQ then refuses to delete the job. The next request for it still gets queued."""
    import time

    from portal.outbound.outbox import SEND_OPTIONS

    app.config["TIDEMARK_JOBS_SYNC"] = False
    q = jobs.queue(redis)
    q.enqueue("workers.maintenance.prune_sign_in_failures", "an argument too many", job_id="send-outbox",
              failure_ttl=300)
    SimpleWorker([q], connection=redis).work(burst=True)
    dead = q.fetch_job("send-outbox")
    assert dead.is_failed
    redis.zadd(dead.execution_registry.key, {"a-run-whose-record-is-gone": time.time() + 3600})
    jobs.enqueue(SEND_JOB, options=SEND_OPTIONS)
    commit()
    assert q.job_ids == ["send-outbox"]
    assert q.fetch_job("send-outbox").func_name == SEND_JOB

from rq import Worker

from portal.jobs import queue


def test_healthz_reports_database_redis_and_live_workers(app, browser, redis):
    assert browser.get("/healthz").get_json()["workers"] == 0
    worker = Worker([queue(redis)], connection=redis)
    worker.register_birth()
    try:
        state = browser.get("/healthz").get_json()
    finally:
        worker.register_death()
    assert state["status"] == "ok"
    assert state["database"] == {"ok": True} and state["redis"] == {"ok": True}
    assert state["workers"] == 1


def test_healthz_says_which_part_is_down(app, browser):
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    resp = browser.get("/healthz")
    state = resp.get_json()
    assert resp.status_code == 503 and state["status"] == "degraded"
    assert state["database"]["ok"] is True and state["redis"]["ok"] is False
    assert "refused" in state["redis"]["error"].lower() or "connect" in state["redis"]["error"].lower()


def test_healthz_needs_no_sign_in_but_the_dashboard_does(browser):
    assert browser.get("/healthz").status_code == 200
    assert browser.get("/").status_code == 302

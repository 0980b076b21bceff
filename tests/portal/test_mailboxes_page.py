from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox
from tests.mailfactory import email


def test_mailbox_list_shows_health_and_test_connection_answers_in_place(world, browser, dovecot, mail_user, app):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    good = world.mailbox(msp, address="support@acme.example", host="127.0.0.1", port=dovecot.imap_port,
                         security="none", username=mail_user.name, password=mail_user.password)
    bad = world.mailbox(msp, address="old@acme.example", host="127.0.0.1", port=1, security="none")
    bad.failure_count, bad.last_error = 3, "could not connect to 127.0.0.1:1: connection refused"
    world.deliver(good, email())
    db.session.commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/mailboxes").get_data(as_text=True)
    assert "support@acme.example" in page and "old@acme.example" in page
    assert "connection refused" in page and "3 failed polls" in page
    ok = browser.post(f"/mailboxes/{good.id}/test", htmx=True).get_data(as_text=True)
    assert "Connected to 127.0.0.1" in ok and "<html" not in ok
    refused = browser.post(f"/mailboxes/{bad.id}/test", htmx=True).get_data(as_text=True)
    assert "could not connect" in refused
    db.session.expire_all()
    assert db.session.get(Mailbox, good.id).last_test_ok is True
    assert "Connected to 127.0.0.1" in browser.get("/mailboxes").get_data(as_text=True)  # kept, with its time


def test_technicians_see_health_but_cannot_test_and_other_msps_get_404(world, make_browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="tom@acme.example", role="technician")
    box = world.mailbox(msp)
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    tom = make_browser()
    tom.sign_in("tom@acme.example")
    assert "support@acme.example" in tom.get("/mailboxes").get_data(as_text=True)
    assert tom.post(f"/mailboxes/{box.id}/test").status_code == 403
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert "support@acme.example" not in eve.get("/mailboxes").get_data(as_text=True)
    assert eve.post(f"/mailboxes/{box.id}/test").status_code == 404
    assert db.session.scalar(select(Mailbox)).last_test_at is None


def test_list_shows_fetch_lag_in_words_and_messages_since_the_viewers_midnight(world, browser):
    from zoneinfo import ZoneInfo

    from portal.models import RawMessage
    from portal.models.base import utcnow
    from portal.services.dashboard import start_of_day

    msp = world.msp("Acme MSP")
    ana = world.user(msp, email="ana@acme.example")
    ana.timezone = "Pacific/Auckland"
    busy = world.mailbox(msp, address="support@acme.example", acknowledge=False)
    quiet = world.mailbox(msp, address="quiet@acme.example", acknowledge=False)
    for i in range(3):
        world.deliver(busy, email(subject=f"today {i}"))
    world.deliver(quiet, email(subject="yesterday"))
    now = utcnow()
    midnight = start_of_day(now, ZoneInfo("Pacific/Auckland"))
    raws = {r.mailbox_id: r for r in db.session.scalars(select(RawMessage).order_by(RawMessage.id))}
    raws[quiet.id].fetched_at = midnight - timedelta(seconds=1)  # late last night, where Ana is
    busy.status, busy.poll_interval, busy.last_success_at = "active", 60, now - timedelta(hours=2, minutes=5)
    quiet.status, quiet.last_success_at = "active", now - timedelta(seconds=30)
    db.session.commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/mailboxes").get_data(as_text=True)
    rows = page.split("<tr class=\"state-")
    busy_row = next(r for r in rows if "support@acme.example" in r)
    quiet_row = next(r for r in rows if "quiet@acme.example" in r)
    assert "Fetch lag" in page and "Messages today" in page
    assert "2 hours" in busy_row and "late" in busy_row and '<td class="num">3</td>' in busy_row
    assert "less than a minute" in quiet_row and "badge late" not in quiet_row
    assert '<td class="num">0</td>' in quiet_row


def test_messages_today_counts_from_midnight_in_the_given_time_zone(world):
    from zoneinfo import ZoneInfo

    from portal.models import RawMessage
    from portal.services.dashboard import mailbox_figures

    msp = world.msp("Acme MSP")
    box = world.mailbox(msp, acknowledge=False)
    for i in range(3):
        world.deliver(box, email(subject=f"mail {i}"))
    # 10:00 UTC on 29 November is 23:00 in Auckland (UTC+13): its day began at 11:00 UTC on the 28th.
    now = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
    a, b, c = db.session.scalars(select(RawMessage).order_by(RawMessage.id)).all()
    a.fetched_at = datetime(2026, 11, 28, 20, 0, tzinfo=timezone.utc)  # Auckland's today, UTC's yesterday
    b.fetched_at = datetime(2026, 11, 28, 10, 59, tzinfo=timezone.utc)  # Auckland's yesterday
    c.fetched_at = datetime(2026, 11, 29, 9, 0, tzinfo=timezone.utc)
    db.session.commit()
    assert mailbox_figures(msp.id, ZoneInfo("Pacific/Auckland"), now)[box.id].messages_today == 2
    assert mailbox_figures(msp.id, timezone.utc, now)[box.id].messages_today == 1
    assert mailbox_figures(msp.id, timezone.utc, now)[box.id].lag_words == "never fetched"

"""Time to ticket from the mail server's receive time: today's p50 and p95 on the mailbox page,
the dashboard's 7 days from the receive time where known, and the operator's /metrics."""

from datetime import datetime, timedelta, timezone

from portal.models.base import utcnow
from portal.services import commit
from portal.services import dashboard as board
from portal.services.metrics import metrics_text
from tests.mailfactory import email

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def at(hour, minute=0, second=0, day=20):
    return datetime(2026, 11, day, hour, minute, second, tzinfo=timezone.utc)


def delivered(world, box, subject, *, received, fetched, recorded, sent=None):
    result = world.deliver(box, email(subject=subject, to=[box.address]))
    assert result.ticket is not None, (result.outcome, result.trace)
    result.message.sent_at, result.message.created_at = sent, recorded
    result.ticket.created_at = recorded
    result.message.raw_message.fetched_at = fetched
    result.message.raw_message.received_at = received
    commit()
    return result


def test_today_counts_from_the_receive_time_else_the_fetch(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="support@acme.example", acknowledge=False)
    # Date header at 9:00 is ignored where the server said when it received the mail.
    for seconds in (2, 4, 6, 8, 100):
        delivered(world, box, f"s{seconds}", sent=at(9), received=at(10), fetched=at(10, 0, 1),
                  recorded=at(10) + timedelta(seconds=seconds))
    delivered(world, box, "pop3", sent=at(8), received=None, fetched=at(11), recorded=at(11, 0, 3))  # 3 s
    delivered(world, box, "yesterday", sent=None, received=at(10, day=19), fetched=at(10, day=19),
              recorded=at(11, day=19))
    today = board.time_to_ticket_today(msp.id, timezone.utc, NOW)
    assert today[box.id].count == 6
    assert today[box.id].p50 == timedelta(seconds=5)  # 2 3 4 6 8 100
    assert today[box.id].p95 == timedelta(seconds=8 + (100 - 8) * 0.75)
    assert today[box.id].total == timedelta(seconds=123)
    # The dashboard's 7 days: from the receive time too (not the 9:00 Date); from the Date header
    # only where the server gave no receive time (the POP3 one: 8:00 to 11:00:03).
    week = board.time_to_ticket(msp.id, NOW)[box.id]
    assert week.count == 7 and week.median == timedelta(seconds=8)  # 2 4 6 8 100 3600 10803
    assert week.p90 == timedelta(seconds=3600 + (10803 - 3600) * 0.4)
    assert board.duration_in_words(timedelta(seconds=4.25)) == "4.2 s"
    assert board.duration_in_words(timedelta(seconds=42.4)) == "42 s"
    assert board.duration_in_words(timedelta(minutes=3)) == "3 minutes"


def test_the_mailbox_page_shows_today_p50_and_p95(world, browser):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.user(msp, email="ana@acme.example")
    box = world.mailbox(msp, address="support@acme.example", acknowledge=False)
    quiet = world.mailbox(msp, address="quiet@acme.example", acknowledge=False)
    now = utcnow()
    for seconds in (2, 4):
        delivered(world, box, f"s{seconds}", received=now - timedelta(seconds=30), fetched=now - timedelta(seconds=29),
                  recorded=now - timedelta(seconds=30 - seconds))
    browser.sign_in("ana@acme.example")
    page = browser.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    assert ('<dd class="ticket-time">median 3.0 s, 95% within 3.9 s (2 emails, from the server\'s receive time)</dd>'
            in page)
    assert "no mail became a ticket today" in browser.get(f"/mailboxes/{quiet.id}").get_data(as_text=True)


def test_metrics_need_the_operators_token_and_name_mailboxes_by_id_only(app, world, redis):
    client = app.test_client()
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="support@acme.example", acknowledge=False, status="active")
    theirs = world.mailbox(world.msp("Other MSP"), address="help@other.example", acknowledge=False)
    now = utcnow()
    delivered(world, box, "ours", received=now - timedelta(seconds=10), fetched=now - timedelta(seconds=9),
              recorded=now - timedelta(seconds=7))
    delivered(world, theirs, "theirs", received=now - timedelta(seconds=10), fetched=now - timedelta(seconds=9),
              recorded=now - timedelta(seconds=5))

    app.config["TIDEMARK_METRICS_TOKEN"] = None
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404
    app.config["TIDEMARK_METRICS_TOKEN"] = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain; version=0.0.4")
    text = answer.get_data(as_text=True)
    assert f'tidemark_time_to_ticket_seconds{{mailbox="{box.id}",quantile="0.5"}} 3.0' in text
    assert f'tidemark_time_to_ticket_seconds{{mailbox="{theirs.id}",quantile="0.95"}} 5.0' in text
    assert f'tidemark_time_to_ticket_seconds_count{{mailbox="{box.id}"}} 1' in text
    assert 'tidemark_mailboxes{status="active"} 1' in text and 'tidemark_mailboxes{status="draft"} 1' in text
    assert f'tidemark_mailbox_failures{{mailbox="{box.id}"}} 0' in text
    assert 'tidemark_mailboxes_failing 0' in text and "tidemark_mailboxes_stalled 0" in text
    assert "# TYPE tidemark_time_to_ticket_seconds summary" in text
    for name in ("acme", "Acme", "other.example", "Contoso"):
        assert name not in text
    assert metrics_text(utcnow()).count("\n") == text.count("\n")

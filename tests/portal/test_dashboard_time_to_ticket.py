"""Time to ticket per mailbox: from an email's Date to its ticket, median and 90th percentile over
the mail fetched in the last 7 days (services.dashboard.time_to_ticket), and its chart."""

import re
from datetime import datetime, timedelta, timezone

from portal.main.charts import Bar, horizontal_bars
from portal.models.base import utcnow
from portal.services import commit
from portal.services import dashboard as board
from tests.mailfactory import email

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def at(hour: int, minute: int = 0, second: int = 0, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=timezone.utc)


def delivered(world, box, subject, sent, fetched, recorded, opened=None, onto=None):
    """One email through the pipeline, then its times set: Date header, fetch, message recorded,
    ticket opened (or the message put onto another, older ticket)."""
    result = world.deliver(box, email(subject=subject, to=[box.address]))
    assert result.ticket is not None, (result.outcome, result.trace)
    result.message.sent_at, result.message.created_at = sent, recorded
    result.message.raw_message.fetched_at = fetched
    if onto is not None:
        result.message.ticket = onto
    else:
        result.ticket.created_at = opened or recorded
    commit()
    return result


def test_the_median_and_90th_percentile_per_mailbox_from_date_to_ticket(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, address="support@acme.example", acknowledge=False)
    other_box = world.mailbox(msp, address="sales@acme.example", acknowledge=False)
    first = delivered(world, box, "new", sent=at(10), fetched=at(10, 1), recorded=at(10, 2))  # 120 s
    delivered(world, box, "reply", sent=at(11), fetched=at(11, 5), recorded=at(11, 10), onto=first.ticket)  # 600 s
    delivered(world, box, "no date", sent=None, fetched=at(9), recorded=at(9, 0, 30))  # 30 s from the fetch
    delivered(world, box, "clock ahead", sent=at(12, 30), fetched=at(11), recorded=at(11, 1))  # 60 s from the fetch
    delivered(world, box, "replayed", sent=at(8), fetched=at(8), recorded=at(8, 0, 10), opened=at(8, 30))  # 1800 s
    delivered(world, box, "last week", sent=at(8, day=12), fetched=at(8, day=12), recorded=at(9, day=12))
    delivered(world, other_box, "sales", sent=at(7), fetched=at(7, 1), recorded=at(7, 4))  # 240 s
    theirs = world.msp("Other MSP")
    their_box = world.mailbox(theirs, address="help@other.example", acknowledge=False)
    delivered(world, their_box, "theirs", sent=at(7), fetched=at(7), recorded=at(9))

    times = board.time_to_ticket(msp.id, now=NOW)
    assert set(times) == {box.id, other_box.id}
    assert times[box.id] == board.TimeToTicket(5, timedelta(seconds=120), timedelta(seconds=1320))
    assert times[other_box.id] == board.TimeToTicket(1, timedelta(seconds=240), timedelta(seconds=240))
    # Bounded: only the latest fetched of each mailbox count (11:05 and 11:00 here).
    assert board.time_to_ticket(msp.id, now=NOW, rows=2)[box.id] == board.TimeToTicket(
        2, timedelta(seconds=330), timedelta(seconds=546))
    assert board.time_to_ticket(theirs.id, now=NOW)[their_box.id].median == timedelta(hours=2)


def test_percentiles_interpolate_between_the_nearest_values():
    assert board.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert board.percentile([30.0, 60.0, 120.0, 600.0, 1800.0], 0.9) == 1320.0
    assert board.percentile([7.0], 0.9) == 7.0


def test_a_whisker_reaches_the_mark_past_its_bar():
    svg = str(horizontal_bars("t", "T", [Bar("a@x.example", 100, "median", mark=400),
                                         Bar("b@x.example", 200, "median", mark=200)], words_width=250))
    plot_w = 640 - 200 - 250
    rects = re.findall(r'<rect class="bar" x="200" y="[\d.]+" width="([\d.]+)"', svg)
    assert [float(w) for w in rects] == [plot_w / 4, plot_w / 2]  # the mark 400 is the full width
    marks = re.findall(r'<path class="mark" d="M([\d.]+) [\d.]+H([\d.]+)', svg)
    assert [(float(a), float(b)) for a, b in marks] == [(200 + plot_w / 4, 200 + plot_w)]  # none where mark = bar


def test_the_dashboard_charts_time_to_ticket_for_this_msps_mailboxes(world, browser):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    world.user(msp, email="ana@acme.example")
    box = world.mailbox(msp, address="support@acme.example", acknowledge=False, status="active")
    world.mailbox(msp, address="quiet@acme.example", acknowledge=False, status="active")
    world.mailbox(msp, address="draft@acme.example", acknowledge=False)
    now = utcnow()
    for minutes in (2, 4, 30):
        delivered(world, box, f"m{minutes}", sent=now - timedelta(hours=1),
                  fetched=now - timedelta(hours=1), recorded=now - timedelta(hours=1) + timedelta(minutes=minutes))
    theirs = world.mailbox(world.msp("Other MSP"), address="help@other.example", acknowledge=False)
    delivered(world, theirs, "theirs", sent=now - timedelta(hours=2), fetched=now - timedelta(hours=2),
              recorded=now - timedelta(hours=1))

    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    section = page[page.index('id="ticket-time"'):]
    section = section[:section.index("</section>")]
    chart = section[:section.index("</svg>")]
    assert '<svg class="chart bars"' in chart and 'aria-labelledby="ticket-time-title ticket-time-desc"' in chart
    assert "help@other.example" not in section and "draft@acme.example" not in section
    assert len(re.findall(r'<rect class="bar"', chart)) == 1  # quiet@ has nothing to draw
    assert 'data-value="240"' in chart and 'class="mark"' in chart  # median 4 minutes, whisker to the 90th
    assert "median 4 minutes, 90% within 24 minutes" in chart and "no mail became a ticket" in chart
    # The table for screen readers says the same, and the caption names what is measured.
    assert '<th scope="row">support@acme.example</th><td>median 4 minutes, 90% within 24 minutes</td>' in section
    assert "Date header" in section and "90th percentile" in section

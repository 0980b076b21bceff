"""Tickets opened and closed per day per client, and fetch lag per mailbox: the figures (services.dashboard.tickets_per_day,
scoped to the MSP) and the SVG drawn from them (portal/main/charts.py)."""

import re
from datetime import date, timedelta, timezone

from sqlalchemy import select

from portal.main.charts import (
    BOTTOM,
    HEIGHT,
    LABEL_W,
    LEFT,
    TOP,
    WORDS_W,
    Bar,
    Series,
    bar_geometry,
    daily_bars,
    horizontal_bars,
)
from portal.extensions import db
from portal.models import AuditEntry
from portal.models.base import utcnow
from portal.services import commit
from portal.services import dashboard as board
from portal.services.tickets import change_status
from tests.mailfactory import email


def bars(svg: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', tag)) for tag in re.findall(r"<rect [^>]*>", svg)]


def test_the_bars_stand_where_their_day_and_count_say():
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(4)]
    svg = str(daily_bars("c1", "Tickets at A", days, [Series("opened", [0, 5, 1, 0]), Series("closed", [2, 0, 0, 0])]))
    drawn = bars(svg)
    assert [(b["class"], b["data-value"]) for b in drawn] == [("bar opened", "5"), ("bar opened", "1"),
                                                              ("bar closed", "2")]
    plot_w, plot_h, baseline = 640 - LEFT - 8, HEIGHT - TOP - BOTTOM, HEIGHT - BOTTOM
    slot = plot_w / 4
    tall, short, closed = drawn
    # The peak, 5, is the axis' top (a nice number): its bar is the plot's full height.
    assert float(tall["height"]) == plot_h and float(tall["y"]) == TOP
    assert float(short["height"]) == round(plot_h / 5, 2)
    for bar in drawn:
        assert round(float(bar["y"]) + float(bar["height"]), 1) == baseline
    assert float(tall["x"]) == round(LEFT + slot + slot * 0.1, 2)  # day 2, first of two side by side
    assert float(closed["x"]) == round(LEFT + slot * 0.1 + slot * 0.4, 2)  # day 1, second
    assert float(tall["width"]) == round(slot * 0.4, 2)
    assert (float(tall["x"]), float(tall["y"])) == bar_geometry(4, 2, 5, 5, 1, 0)[:2]
    assert 'role="img"' in svg and 'aria-labelledby="c1-title c1-desc"' in svg
    assert '<desc id="c1-desc">Per day from 01 Nov to 04 Nov: 6 opened, 2 closed.</desc>' in svg
    assert ">01 Nov</text>" in svg and ">04 Nov</text>" in svg and ">5</text>" in svg and ">0</text>" in svg
    # The table says the same, days with nothing left out.
    assert "<tr><th scope=\"row\">02 Nov</th><td class=\"num\">5</td><td class=\"num\">0</td></tr>" in svg
    assert "04 Nov</th>" not in svg
    # A peak of 4 makes an axis to 5, the next round number.
    assert bars(str(daily_bars("c3", "t", days, [Series("opened", [0, 4, 0, 0])])))[0]["height"] == str(
        round(plot_h * 4 / 5, 2))


def test_names_are_escaped_and_an_empty_series_draws_no_bar():
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(3)]
    svg = str(daily_bars("c2", 'Tickets at <b>"Bad" & Co</b>', days, [Series("opened", [0, 0, 0])]))
    assert "<b>" not in svg and "&lt;b&gt;&#34;Bad&#34; &amp; Co&lt;/b&gt;" in svg
    assert bars(svg) == [] and "None in these days." in svg


def test_tickets_opened_and_closed_per_day_per_client_of_this_msp_only(world, browser):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso <Ltd>", allow=["contoso.com"])
    world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    box = world.mailbox(msp, acknowledge=False)
    ana = world.user(msp, email="ana@acme.example")
    tickets = [world.deliver(box, email(sender="alice@contoso.com", subject=f"c{i}")).ticket for i in range(3)]
    tickets.append(world.deliver(box, email(sender="bob@fabrikam.com", subject="f")).ticket)
    change_status(tickets[2], "closed", ana)
    commit()
    # Every time relative to one "now", given to the figures: no midnight between two readings
    # of the clock can move a ticket to another day.
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    for ticket, days_ago in zip(tickets, (2, 40, 0, 0), strict=True):  # 40: before the chart's 30 days
        ticket.created_at = now - timedelta(days=days_ago)
    db.session.scalar(select(AuditEntry).where(AuditEntry.record_type == "ticket",
                                               AuditEntry.record_id == tickets[2].id)).at = now
    commit()
    other = world.msp("Other MSP")
    world.client(other, "Theirs", allow=["contoso.com"])
    theirs = world.mailbox(other, address="help@other.example", acknowledge=False)
    world.deliver(theirs, email(sender="alice@contoso.com", to=["help@other.example"], subject="not ours"))

    days, rows = board.tickets_per_day(msp.id, timezone.utc, now)
    assert len(days) == 30 and days[-1] == now.date()
    assert [(r.client.name, sum(r.opened), sum(r.closed)) for r in rows] == [("Contoso <Ltd>", 2, 1), ("Fabrikam", 1, 0)]
    assert rows[0].opened[-3] == 1 and rows[0].opened[-1] == 1 and rows[0].closed[-1] == 1

    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert page.count('<svg class="chart"') == 2 and "Theirs" not in page
    assert "Tickets opened and closed at Contoso &lt;Ltd&gt;" in page
    contoso_chart = page[page.index(f'id="chart-{contoso.id}-title"'):]
    assert len(bars(contoso_chart[:contoso_chart.index("</svg>")])) == 3  # two days opened, one closed


def test_lag_bars_are_as_long_as_their_lag_and_say_it_in_words():
    svg = str(horizontal_bars("lag", "Lag", [Bar("a@x.example", 600, "10 minutes", late=True),
                                             Bar("<b>@x.example", 150, "2 minutes"),
                                             Bar("new@x.example", None, "never fetched")]))
    drawn = bars(svg)
    full = 640 - LABEL_W - WORDS_W
    assert [(b["class"], float(b["width"])) for b in drawn] == [("bar late", full), ("bar", full / 4)]
    assert float(drawn[1]["y"]) > float(drawn[0]["y"])  # in the order given
    assert "never fetched" in svg and "&lt;b&gt;@x.example" in svg and "<b>@" not in svg
    assert '<desc id="lag-desc">a@x.example: 10 minutes; &lt;b&gt;@x.example: 2 minutes; ' in svg


def test_the_dashboard_charts_the_fetch_lag_of_this_msps_active_mailboxes(world, browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    fresh = world.mailbox(msp, address="fresh@acme.example", status="active", poll_interval=60)
    late = world.mailbox(msp, address="late@acme.example", status="active", poll_interval=60)
    world.mailbox(msp, address="draft@acme.example")  # a draft is not fetched: not charted
    other = world.msp("Other MSP")
    theirs = world.mailbox(other, address="help@other.example", status="active")
    now = utcnow()
    fresh.last_success_at, late.last_success_at = now - timedelta(minutes=2), now - timedelta(minutes=20)
    theirs.last_success_at = now - timedelta(hours=3)
    commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    chart = page[page.index('id="fetch-lag-title"'):]
    chart = chart[:chart.index("</svg>")]
    assert "help@other.example" not in chart and "draft@acme.example" not in chart
    drawn = bars(chart)
    assert [b["class"] for b in drawn] == ["bar", "bar late"]  # by address: fresh, then late
    assert float(drawn[1]["width"]) == 640 - LABEL_W - WORDS_W and float(drawn[0]["width"]) < float(drawn[1]["width"])
    assert "20 minutes (late)" in chart

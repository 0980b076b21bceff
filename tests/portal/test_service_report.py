"""The monthly service report: figures against medians and 90th percentiles worked out by hand,
the CSV with the page's numbers, the month picker, and scoping to the MSP."""

import csv
import io
import re
from datetime import UTC, datetime

import pytest

from portal.extensions import db
from portal.models import SlaPolicy
from portal.services import commit
from portal.services.sla import clock_policy
from portal.services.sla_report import csv_rows, service_report
from portal.sla import clock
from tests.mailfactory import email

WEEKDAYS = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
TARGETS = {"normal": {"response": 60, "resolution": 480}, "high": {"response": 30, "resolution": 240}}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(day, hour, minute=0):
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)  # 2 November 2026 is a Monday


@pytest.fixture
def month(world):
    """November 2026 at Contoso under office hours (09-17 UTC, Monday to Friday):
    1. normal, Mon 10:00, answered 10:30, resolved 12:00 (both in time);
    2. normal, Mon 16:00, answered Tue 09:30 (late: due Tue 09:00), resolved Tue 11:00 (in time);
    3. normal, Mon 11:00, answered 13:00 (late), resolved Wed 11:00 (late: due Tue 11:00);
    4. high, Tue 09:00, answered 09:10 (in time), still open (resolution due Tue 13:00: late);
    and a ticket of October at Contoso and one of November at Fabrikam, not in Contoso's report."""
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="ana@acme.example", role="technician")
    row = SlaPolicy(msp_id=msp.id, name="Office hours", timezone="UTC", business_hours=WEEKDAYS, holidays=[],
                    targets=TARGETS)
    db.session.add(row)
    db.session.flush()
    policy = clock_policy(row)

    def ticket(sender, start, answered=None, resolved=None, priority="normal"):
        t = world.deliver(box, email(sender=sender, subject=f"{sender} {start:%d %H:%M}")).ticket
        t.created_at, t.priority, t.sla_policy_id = start, priority, row.id
        clock.start(t, policy, start)
        if answered:
            clock.responded(t, answered)
        if resolved:
            clock.resolved(t, policy, resolved)
            t.status = "resolved"
        return t

    ticket("a@contoso.com", at(2, 10), at(2, 10, 30), at(2, 12))
    ticket("b@contoso.com", at(2, 16), at(3, 9, 30), at(3, 11))
    ticket("c@contoso.com", at(2, 11), at(2, 13), at(4, 11))
    ticket("d@contoso.com", at(3, 9), at(3, 9, 10), priority="high")
    ticket("e@contoso.com", datetime(2026, 10, 30, 10, 0, tzinfo=UTC), None, None)
    ticket("f@fabrikam.com", at(5, 10), at(5, 10, 20), at(5, 11))
    commit()
    return msp, contoso, fabrikam


def figures(report):
    return {(r[0], r[2]): r[1:2] + r[3:] for r in csv_rows(report)}


def test_the_figures_match_the_hand_worked_ones(month):
    msp, contoso, _fabrikam = month
    got = figures(service_report(contoso, datetime(2026, 11, 1).date(), NOW))
    # (tickets, measured, business median, business p90, wall median, wall p90, within, with target, share)
    # Business first responses 30, 90, 120 min: median 90, p90 90 + 0.8 * 30; wall 30, 120, 1050.
    assert got[("normal", "first response")] == ("3", "3", "90.0", "114.0", "120.0", "864.0", "1", "3", "33.3")
    # Business resolutions 120, 180 (16-17 and 09-11), 960 (6 + 8 + 2 hours); wall 120, 1140, 2880.
    assert got[("normal", "resolution")] == ("3", "3", "180.0", "804.0", "1140.0", "2532.0", "2", "3", "66.7")
    assert got[("high", "first response")] == ("1", "1", "10.0", "10.0", "10.0", "10.0", "1", "1", "100.0")
    assert got[("high", "resolution")] == ("1", "0", "", "", "", "", "0", "1", "0.0")  # open and past due
    # All four: first responses 10, 30, 90, 120: median 60, p90 at 2.7 of 3 steps: 90 + 0.7 * 30;
    # wall 10, 30, 120, 1050: median 75, p90 120 + 0.7 * 930.
    assert got[("all", "first response")] == ("4", "4", "60.0", "111.0", "75.0", "771.0", "2", "4", "50.0")
    assert [k for k in got] == [("normal", "first response"), ("normal", "resolution"), ("high", "first response"),
                                ("high", "resolution"), ("all", "first response"), ("all", "resolution")]
    everyone = figures(service_report(msp, datetime(2026, 11, 1).date(), NOW))
    assert everyone[("all", "first response")][0] == "5"  # Fabrikam's ticket too
    assert figures(service_report(contoso, datetime(2026, 10, 1).date(), NOW))[("all", "resolution")][0] == "1"


def test_the_page_and_its_csv_show_the_same_numbers(month, browser):
    msp, contoso, _fabrikam = month
    browser.sign_in("ana@acme.example")  # a technician reads reports too
    page = browser.get(f"/clients/{contoso.id}/service-report?month=2026-11").get_data(as_text=True)
    assert "Service report: Contoso" in page and "November 2026" in page and "<svg" in page
    assert 'id="service-report-title"' in page and "median 1 h 30 min, 90% within 1 h 54 min" in page
    resp = browser.get(f"/clients/{contoso.id}/service-report.csv?month=2026-11")
    assert resp.mimetype == "text/csv"
    assert 'filename="service-report-contoso-2026-11.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0][:3] == ["priority", "tickets", "clock"] and len(rows) == 7
    shown = re.findall(r'<tr data-priority="([^"]+)" data-clock="([^"]+)">(.*?)</tr>', page)
    assert len(shown) == 6
    for (priority, clock_name, cells), row in zip(shown, rows[1:], strict=True):
        values = [v.strip() for v in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", cells)]
        assert [priority, clock_name] == [row[0], row[2]]
        assert values == [v or "–" for v in row]


def test_a_month_that_cannot_be_read_says_so(month, browser):
    _msp, contoso, _fabrikam = month
    browser.sign_in("ana@acme.example")
    resp = browser.get(f"/clients/{contoso.id}/service-report?month=2026-13")
    assert resp.status_code == 422 and "is not a month like" in resp.get_data(as_text=True)
    assert browser.get(f"/clients/{contoso.id}/service-report.csv?month=soon").status_code == 422
    assert browser.get(f"/clients/{contoso.id}/service-report?month=0001-01").status_code == 422
    empty = browser.get(f"/clients/{contoso.id}/service-report?month=2025-01").get_data(as_text=True)
    assert "No ticket was created in January 2025" in empty


def test_another_msp_gets_404(month, world, browser):
    _msp, contoso, _fabrikam = month
    other = world.msp("Other MSP")
    world.user(other, email="olga@other.example")
    browser.sign_in("olga@other.example")
    assert browser.get(f"/clients/{contoso.id}/service-report?month=2026-11").status_code == 404
    assert browser.get(f"/clients/{contoso.id}/service-report.csv?month=2026-11").status_code == 404

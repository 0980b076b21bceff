"""The dashboard's service levels per client: what is due today and what is breached, linking
into the ticket list filtered. The clocks are set through portal.sla.clock."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal.extensions import db
from portal.models import SlaPolicy
from portal.models.base import utcnow
from portal.services import commit
from portal.services import dashboard as board
from portal.services.sla import clock_policy
from portal.sla import clock
from tests.mailfactory import email

ALWAYS = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
TARGETS = {"normal": {"response": 60, "resolution": 240}, "low": {"resolution": 2400}}
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="ana@acme.example")
    row = SlaPolicy(msp_id=msp.id, name="24/7", timezone="UTC", business_hours=ALWAYS, holidays=[], targets=TARGETS)
    db.session.add(row)
    commit()

    def ticket(sender, started, priority="normal"):
        t = world.deliver(box, email(sender=sender, subject=f"from {sender} at {started}")).ticket
        t.priority, t.sla_policy_id = priority, row.id
        clock.start(t, clock_policy(row), started)
        return t

    return msp, contoso, fabrikam, clock_policy(row), ticket


def test_due_today_and_breached_per_client(desk):
    msp, contoso, fabrikam, policy, ticket = desk
    ticket("a@contoso.com", NOW - timedelta(minutes=10))  # response due 10:50: due today
    ticket("b@contoso.com", NOW - timedelta(hours=2))  # response due 09:00: due today (overdue) and breached
    paused = ticket("c@contoso.com", NOW - timedelta(hours=2))
    clock.pause(paused, NOW - timedelta(hours=1, minutes=30))  # waiting since before it was due: neither
    paused.status = "waiting"
    ticket("d@contoso.com", NOW - timedelta(minutes=10), "low")  # resolution due in 40 hours: neither
    late = ticket("e@fabrikam.com", NOW - timedelta(hours=6))
    clock.responded(late, NOW - timedelta(hours=5, minutes=30))
    clock.resolved(late, policy, NOW - timedelta(hours=1))  # an hour late this month
    late.status = "resolved"
    last_month = ticket("f@fabrikam.com", datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    clock.responded(last_month, datetime(2026, 11, 20, 12, 0, tzinfo=UTC))  # late, but in November
    clock.resolved(last_month, policy, datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    last_month.status = "closed"
    commit()
    assert board.service_levels(msp.id, UTC, NOW) == {contoso.id: (2, 1), fabrikam.id: (0, 1)}
    matrix = board.open_tickets(msp.id, UTC, NOW)
    assert (matrix.due_today, matrix.breached) == (2, 2)
    assert [(r.client.name, r.due_today, r.breached) for r in matrix.rows] == [("Contoso", 2, 1), ("Fabrikam", 0, 1)]
    # Where the viewer is decides where today ends. The low ticket's resolution is due on
    # 2026-12-09 01:50 UTC: at 18:00 UTC the day before that is tomorrow in London, today in Tokyo.
    evening = datetime(2026, 12, 8, 18, 0, tzinfo=UTC)
    assert board.service_levels(msp.id, UTC, evening)[contoso.id] == (2, 2)
    assert board.service_levels(msp.id, ZoneInfo("Asia/Tokyo"), evening)[contoso.id] == (3, 2)
    assert board.service_levels(msp.id, UTC, evening + timedelta(hours=8))[contoso.id] == (3, 3)  # and now late


def test_the_dashboard_shows_and_links_them(desk, browser):
    msp, contoso, fabrikam, policy, ticket = desk
    ticket("b@contoso.com", utcnow() - timedelta(hours=2))
    commit()
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert 'aria-label="1 breached at Contoso"' in page and 'aria-label="1 due today at Contoso"' in page
    assert f'href="/tickets?client={contoso.id}&amp;sla=breached"' in page
    assert f'href="/tickets?client={contoso.id}&amp;sla=due_today"' in page
    assert "Fabrikam" not in page.split('id="open-title"')[1].split("</table>")[0]  # nothing open there


def test_another_msps_tickets_are_not_counted(desk, world):
    msp, contoso, fabrikam, policy, ticket = desk
    ticket("b@contoso.com", NOW - timedelta(hours=2))
    commit()
    other = world.msp("Other MSP")
    assert board.service_levels(other.id, UTC, NOW) == {}

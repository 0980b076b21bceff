"""A ticket's clocks: start at receipt, pause while waiting, stop on reply and resolution, go on
after a reopen, and recompute when the priority changes."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from portal.sla import clock
from portal.sla.business_time import BusinessHoursError

HOURS = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
TARGETS = {"high": {"response": 60, "resolution": 240}, "normal": {"response": 240, "resolution": 480},
           "low": {"response": None, "resolution": 2400}}


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def policy(**kw):
    return clock.Policy.read(HOURS, [], "UTC", TARGETS, **kw)


def ticket(priority="high"):
    return SimpleNamespace(priority=priority, sla_started_at=None, first_response_due_at=None,
                           resolution_due_at=None, first_response_at=None, resolved_at=None,
                           sla_paused_at=None, sla_paused_minutes=0, sla_sent=None)


MONDAY_10 = utc(2026, 12, 7, 10, 0)


def test_due_times_follow_the_targets_of_the_priority():
    t = ticket()
    clock.start(t, policy(), MONDAY_10)
    assert (t.first_response_due_at, t.resolution_due_at) == (utc(2026, 12, 7, 11, 0), utc(2026, 12, 7, 14, 0))
    t.priority = "normal"
    clock.recompute(t, policy())
    assert (t.first_response_due_at, t.resolution_due_at) == (utc(2026, 12, 7, 14, 0), utc(2026, 12, 8, 10, 0))
    t.priority = "low"  # no response target
    clock.recompute(t, policy())
    assert t.first_response_due_at is None and t.resolution_due_at == utc(2026, 12, 14, 10, 0)


def test_waiting_on_the_customer_moves_the_due_times_by_the_business_time_waited():
    t, p = ticket(), policy()
    clock.start(t, p, MONDAY_10)
    clock.pause(t, utc(2026, 12, 7, 10, 30))
    assert clock.left(t, p, "resolution", utc(2026, 12, 9, 9, 0)) == timedelta(hours=3, minutes=30)  # frozen
    clock.resume(t, p, utc(2026, 12, 8, 10, 30))  # a business day later
    assert t.sla_paused_minutes == 8 * 60
    assert t.resolution_due_at == utc(2026, 12, 8, 14, 0)
    assert clock.left(t, p, "resolution", utc(2026, 12, 8, 11, 0)) == timedelta(hours=3)


def test_the_first_public_reply_stops_the_response_clock_and_resolved_the_other():
    t, p = ticket(), policy()
    clock.start(t, p, MONDAY_10)
    clock.responded(t, utc(2026, 12, 7, 10, 45))
    clock.responded(t, utc(2026, 12, 7, 16, 0))
    assert t.first_response_at == utc(2026, 12, 7, 10, 45)
    assert clock.left(t, p, "response", utc(2026, 12, 7, 12, 0)) is None
    assert not clock.breached(t, "response", utc(2026, 12, 9, 0, 0))
    clock.resolved(t, p, utc(2026, 12, 7, 15, 0))
    assert clock.breached(t, "resolution", utc(2026, 12, 9, 0, 0))  # 15:00 is after 14:00
    assert clock.thresholds_reached(t, p, utc(2026, 12, 9, 0, 0)) == []  # stopped clocks send nothing


def test_a_reopened_ticket_goes_on_where_it_stopped():
    t, p = ticket(), policy()
    clock.start(t, p, MONDAY_10)
    clock.resolved(t, p, utc(2026, 12, 7, 12, 0))  # two of four hours used
    clock.reopened(t, p, utc(2026, 12, 8, 9, 0))  # five business hours later
    assert t.resolved_at is None and t.sla_paused_minutes == 5 * 60
    assert t.resolution_due_at == utc(2026, 12, 8, 11, 0)


def test_warnings_and_breaches_come_once_each_and_a_breach_needs_no_warning_first():
    t, p = ticket(), policy(warning_percent=75)
    clock.start(t, p, MONDAY_10)
    assert clock.thresholds_reached(t, p, utc(2026, 12, 7, 10, 44)) == []
    assert clock.thresholds_reached(t, p, utc(2026, 12, 7, 10, 45)) == ["response_warning"]
    t.sla_sent.append("response_warning")
    assert clock.thresholds_reached(t, p, utc(2026, 12, 7, 10, 50)) == []
    assert clock.thresholds_reached(t, p, utc(2026, 12, 7, 14, 0)) == ["response_breached", "resolution_breached"]
    t.sla_sent += ["response_breached", "resolution_breached"]
    assert clock.thresholds_reached(t, p, utc(2026, 12, 8, 14, 0)) == []


def test_a_later_due_time_lets_its_warning_come_again():
    t, p = ticket(), policy()
    clock.start(t, p, MONDAY_10)
    t.sla_sent = ["response_warning", "resolution_warning"]
    t.priority = "normal"
    clock.recompute(t, p)
    assert t.sla_sent == []
    t.sla_sent = ["resolution_warning"]
    t.priority = "high"  # earlier again: what was sent stays sent
    clock.recompute(t, p)
    assert t.sla_sent == ["resolution_warning"]


def test_a_paused_clock_sends_nothing_and_counts_as_breached_only_if_it_was_when_it_paused():
    t, p = ticket(), policy()
    clock.start(t, p, MONDAY_10)
    clock.pause(t, utc(2026, 12, 7, 10, 30))
    assert clock.thresholds_reached(t, p, utc(2026, 12, 10, 0, 0)) == []
    assert not clock.breached(t, "response", utc(2026, 12, 10, 0, 0))


def test_without_a_policy_there_are_no_due_times():
    t = ticket()
    t.sla_started_at, t.first_response_due_at = MONDAY_10, MONDAY_10
    clock.recompute(t, None)
    assert t.first_response_due_at is None and t.resolution_due_at is None


@pytest.mark.parametrize(("targets", "percent", "words"), [
    ({"high": {"response": 0}}, 80, "whole number of minutes, at least 1"),
    ({"high": {"answer": 10}}, 80, "give a response and a resolution target"),
    (TARGETS, 100, "from 1 to 99"),
])
def test_targets_that_cannot_be_used_say_why(targets, percent, words):
    with pytest.raises(BusinessHoursError, match=words):
        clock.Policy.read(HOURS, [], "UTC", targets, percent)

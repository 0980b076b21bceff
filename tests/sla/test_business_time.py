"""Business-time arithmetic: weekends, holidays, time zones, the days the clocks change, pauses."""

from datetime import UTC, datetime, timedelta

import pytest

from portal.sla.business_time import BusinessHours, BusinessHoursError

WEEKDAYS_9_TO_5 = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def berlin(holidays=()):
    return BusinessHours.read(WEEKDAYS_9_TO_5, list(holidays), "Europe/Berlin")


def test_a_target_runs_over_the_weekend_to_monday_morning():
    hours = berlin()
    friday_4pm = utc(2026, 12, 4, 15, 0)  # 16:00 in Berlin (UTC+1)
    due = hours.add(friday_4pm, timedelta(hours=2))
    assert due == utc(2026, 12, 7, 9, 0)  # one hour on Friday, one on Monday: 10:00 Berlin
    assert hours.between(friday_4pm, due) == timedelta(hours=2)


def test_mail_outside_hours_starts_counting_at_the_next_opening():
    hours = berlin()
    saturday = utc(2026, 12, 5, 12, 0)
    assert hours.add(saturday, timedelta(minutes=30)) == utc(2026, 12, 7, 8, 30)
    assert hours.between(saturday, utc(2026, 12, 7, 8, 0)) == timedelta()


def test_holidays_are_skipped_in_the_policys_own_dates():
    hours = berlin(["2026-12-24", "2026-12-25"])
    wednesday_5pm = utc(2026, 12, 23, 16, 0)
    # Thursday 24th and Friday 25th are holidays, then the weekend: Monday 28th.
    assert hours.add(wednesday_5pm, timedelta(hours=1)) == utc(2026, 12, 28, 9, 0)


def test_the_policys_time_zone_decides_not_utc():
    sydney = BusinessHours.read(WEEKDAYS_9_TO_5, [], "Australia/Sydney")  # UTC+11 in December
    monday_8am_sydney = utc(2026, 12, 6, 21, 0)  # Sunday 21:00 UTC
    assert sydney.add(monday_8am_sydney, timedelta(hours=1)) == utc(2026, 12, 6, 23, 0)  # 10:00 Sydney


def test_a_day_on_which_the_clocks_go_forward_is_23_hours_long():
    around_the_clock = BusinessHours.read({d: [["00:00", "24:00"]] for d in ("sat", "sun", "mon")}, [],
                                          "Europe/Berlin")
    # Sunday 29 March 2026: 02:00 becomes 03:00 in Berlin.
    sunday = (utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0))  # local midnight to midnight
    assert around_the_clock.between(*sunday) == timedelta(hours=23)
    autumn = (utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0))  # 25 October: 25 hours
    assert around_the_clock.between(*autumn) == timedelta(hours=25)


def test_office_hours_keep_their_local_time_across_the_change():
    hours = berlin()
    friday_before = utc(2026, 3, 27, 15, 30)  # 16:30 CET
    # Half an hour on Friday, then Monday 09:00 CEST is 07:00 UTC (it was 08:00 before the change).
    assert hours.add(friday_before, timedelta(hours=1)) == utc(2026, 3, 30, 7, 30)


def test_a_pause_is_the_business_time_between_pausing_and_resuming():
    hours = berlin()
    paused, resumed = utc(2026, 12, 3, 15, 0), utc(2026, 12, 7, 10, 0)  # Thu 16:00 → Mon 11:00
    assert hours.between(paused, resumed) == timedelta(hours=1 + 8 + 2)


def test_several_spans_a_day_leave_the_lunch_break_out():
    hours = BusinessHours.read({"mon": [["13:00", "17:00"], ["08:00", "12:00"]]}, [], "UTC")
    assert hours.add(utc(2026, 12, 7, 11, 0), timedelta(hours=2)) == utc(2026, 12, 7, 14, 0)
    assert hours.between(utc(2026, 12, 7, 0, 0), utc(2026, 12, 8, 0, 0)) == timedelta(hours=8)


def test_adding_then_measuring_gives_the_amount_back():
    hours = berlin(["2026-12-25"])
    start = utc(2026, 12, 1, 6, 17)
    for minutes in (1, 59, 480, 481, 2400, 10_000):
        due = hours.add(start, timedelta(minutes=minutes))
        assert hours.between(start, due) == timedelta(minutes=minutes)
        assert hours.between(start, due - timedelta(seconds=1)) < timedelta(minutes=minutes)


def test_nothing_to_add_is_due_at_once():
    assert berlin().add(utc(2026, 12, 5, 12, 0), timedelta()) == utc(2026, 12, 5, 12, 0)


@pytest.mark.parametrize(("hours", "holidays", "zone", "words"), [
    ({}, [], "UTC", "Open at least one span"),
    ({"monday": [["09:00", "17:00"]]}, [], "UTC", "Unknown weekday 'monday'"),
    ({"mon": [["17:00", "09:00"]]}, [], "UTC", "mon: 17:00-09:00 ends before it starts"),
    ({"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}, [], "UTC", "mon: two spans overlap"),
    ({"mon": [["9am", "17:00"]]}, [], "UTC", "'9am' is not a time of day"),
    ({"mon": [["09:00", "24:30"]]}, [], "UTC", "'24:30' is not a time of day"),
    (WEEKDAYS_9_TO_5, ["25/12/2026"], "UTC", "'25/12/2026' is not a date"),
    (WEEKDAYS_9_TO_5, [], "Mars/Olympus", "not a time zone"),
])
def test_hours_that_cannot_be_read_say_why(hours, holidays, zone, words):
    with pytest.raises(BusinessHoursError, match=words):
        BusinessHours.read(hours, holidays, zone)

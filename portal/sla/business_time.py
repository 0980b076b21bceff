"""Business time: when a policy's working hours are open, how much of it lies between two
moments, and the moment a given amount of it has passed.

Hours are local wall-clock spans per weekday in the policy's time zone, so a day on which the
clocks change is as long as the wall clock says (a 00:00-24:00 day is 23 or 25 hours long), and
holidays are local dates. All moments going in and out are aware UTC datetimes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
# Far enough for any target a policy may hold (a year of business time with one open hour a week
# is 365 * 52 weeks of walking at worst; nobody sets that, and the walk must still end).
_MAX_DAYS = 366 * 60


class BusinessHoursError(ValueError):
    """Hours or holidays that cannot be read, in words for the form."""


@dataclass(frozen=True)
class BusinessHours:
    zone: ZoneInfo
    # Per weekday (0 = Monday): the open spans as minutes after local midnight, sorted, apart.
    weekly: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date]

    @classmethod
    def read(cls, hours: dict, holidays: list[str] | tuple[str, ...], timezone: str) -> BusinessHours:
        """From a policy's stored form ({"mon": [["08:00", "17:00"]], ...}, ["2026-12-25"], "Europe/Berlin")."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BusinessHoursError(f"{timezone!r} is not a time zone this system knows.") from exc
        unknown = set(hours or {}) - set(WEEKDAYS)
        if unknown:
            raise BusinessHoursError(f"Unknown weekday {sorted(unknown)[0]!r}: use mon, tue, wed, thu, fri, sat, sun.")
        weekly = tuple(_day_spans(day, (hours or {}).get(day) or ()) for day in WEEKDAYS)
        if not any(weekly):
            raise BusinessHoursError("Open at least one span on one weekday.")
        days = set()
        for value in holidays or ():
            try:
                days.add(date.fromisoformat(str(value)))
            except ValueError as exc:
                raise BusinessHoursError(f"{value!r} is not a date (YYYY-MM-DD).") from exc
        return cls(zone, weekly, frozenset(days))

    def open_spans(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The open spans (UTC) that overlap [start, end), cut to it, in order."""
        for span_start, span_end in self._spans_from(start):
            if span_start >= end:
                return
            s, e = max(span_start, start), min(span_end, end)
            if s < e:
                yield s, e

    def between(self, start: datetime, end: datetime) -> timedelta:
        """How much business time lies between two moments (none if end is not after start)."""
        total = timedelta()
        if end <= start:
            return total
        for s, e in self.open_spans(start, end):
            total += e - s
        return total

    def add(self, start: datetime, amount: timedelta) -> datetime:
        """The moment `amount` of business time after `start` has passed (start itself for none)."""
        left = amount
        if left <= timedelta():
            return start
        for span_start, span_end in self._spans_from(start):
            s = max(span_start, start)
            if s >= span_end:
                continue
            if left <= span_end - s:
                return s + left
            left -= span_end - s
        raise BusinessHoursError("The target lies too far ahead in business time.")

    def _spans_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open spans in UTC, day by day from the local day before `moment` (a span may have begun then)."""
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for _ in range(_MAX_DAYS):
            if day not in self.holidays:
                for open_minute, close_minute in self.weekly[day.weekday()]:
                    yield self._utc(day, open_minute), self._utc(day, close_minute)
            day += timedelta(days=1)

    def _utc(self, day: date, minute: int) -> datetime:
        if minute == 24 * 60:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
        return local.astimezone(UTC)


def _day_spans(day: str, spans) -> tuple[tuple[int, int], ...]:
    read = []
    for span in spans:
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            raise BusinessHoursError(f"{day}: each span is a start and an end, like 08:00-17:00.")
        opens, closes = (_minute(day, value) for value in span)
        if opens >= closes:
            raise BusinessHoursError(f"{day}: {span[0]}-{span[1]} ends before it starts.")
        read.append((opens, closes))
    read.sort()
    for (_, first_end), (second_start, _) in zip(read, read[1:]):
        if second_start < first_end:
            raise BusinessHoursError(f"{day}: two spans overlap.")
    return tuple(read)


def _minute(day: str, value) -> int:
    found = _CLOCK.match(str(value).strip())
    if not found or (found.group(1) == "24" and found.group(2) != "00"):
        raise BusinessHoursError(f"{day}: {value!r} is not a time of day (HH:MM, up to 24:00).")
    return int(found.group(1)) * 60 + int(found.group(2))

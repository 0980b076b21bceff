"""Times as a person reads them: in a time zone that the caller picks (the viewer's on a page, the
client's in a customer's mail), with the zone's abbreviation, e.g. "2024-03-05 15:20 CET".

Pure: the zone is passed in; nothing here knows users, clients or requests.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = ZoneInfo("UTC")
FORMAT = "%Y-%m-%d %H:%M %Z"


def zone_named(*names: str | None) -> ZoneInfo:
    """The first of `names` this system knows as a time zone, else UTC. Empty names are skipped
    (not set: the next one is in effect), and so are names the system no longer knows."""
    for name in names:
        if not name:
            continue
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return UTC


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken as UTC already (how the database keeps them)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def local_time(value: datetime, tz: tzinfo) -> str:
    """`value` in the zone `tz`, to the minute, with the zone's abbreviation or offset."""
    return as_utc(value).astimezone(tz).strftime(FORMAT)


def utc_time(value: datetime) -> str:
    """The same moment in UTC, for a title beside a local time."""
    return local_time(value, UTC)

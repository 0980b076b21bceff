"""Service levels: an MSP's SLA policies (the clocks themselves are columns of the ticket)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class SlaPolicy(db.Model):
    """Business hours ({"mon": [["08:00", "17:00"]], …}, weekdays without hours are closed) and
    holidays (["2026-12-25", …]) in a time zone, and per priority a first-response and a resolution
    target in business minutes ({"high": {"response": 60, "resolution": 480}, …})."""

    __tablename__ = "sla_policies"
    __table_args__ = (UniqueConstraint("msp_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    business_hours: Mapped[dict[str, Any]] = mapped_column(JSON)
    holidays: Mapped[list[str]] = mapped_column(JSON, default=list)
    targets: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A warning goes out when this share of a target has passed.
    warning_percent: Mapped[int] = mapped_column(Integer, default=80, server_default="80")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

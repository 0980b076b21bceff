"""Clients form one tree per MSP: the MSP is the root, its customers are sub-clients."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow

# Settings a client inherits from its nearest ancestor that sets them (None = inherit).
INHERITED_SETTINGS = ("waterline", "timezone", "language")


class Client(db.Model):
    __tablename__ = "clients"
    __table_args__ = (
        UniqueConstraint("msp_id", "name"),
        UniqueConstraint("msp_id", "code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The MSP root of this client's tree (the root points at itself); every query scopes on it.
    msp_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # MSP roots only: the name casefolded with its spaces collapsed. MSP names are unique across the
    # installation, since the command line and the configuration import find an MSP by its name.
    name_key: Mapped[str | None] = mapped_column(String(600), index=True, unique=True)
    code: Mapped[str | None] = mapped_column(String(20))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    waterline: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(String(64))
    # The language of its customer-facing mail (None: its parent's, then the MSP's, then English).
    language: Mapped[str | None] = mapped_column(String(16))
    # Its own choice of customer notifications (None: its parent's, then the MSP's mail settings).
    customer_notifications: Mapped[list[str] | None] = mapped_column(JSON)
    # Its SLA policy (None: its parent's, then none).
    sla_policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id", ondelete="SET NULL"))
    # Only read on an MSP root: the prefix of its ticket references (T-1042, DEMO-1042).
    reference_prefix: Mapped[str] = mapped_column(String(20), default="T")
    # Only read on an MSP root: the last ticket number handed out (references are per MSP).
    last_ticket_number: Mapped[int] = mapped_column(default=0, server_default="0")
    # Only read on an MSP root: days after which the raw mail of closed tickets, and discarded
    # unprocessed mail, are purged (None: kept).
    retention_raw_days: Mapped[int | None] = mapped_column(Integer)
    retention_unprocessed_days: Mapped[int | None] = mapped_column(Integer)
    # Only read on an MSP root: the ticket types its tickets may have (None or empty: any type).
    ticket_types: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    parent: Mapped[Client | None] = relationship(
        remote_side="Client.id", foreign_keys=[parent_id], back_populates="children"
    )
    children: Mapped[list[Client]] = relationship(
        foreign_keys=[parent_id], back_populates="parent", order_by="Client.name"
    )
    allow_entries: Mapped[list[AllowEntry]] = relationship(
        back_populates="client", cascade="all, delete-orphan", order_by="AllowEntry.value",
        foreign_keys="AllowEntry.client_id",
    )

    @property
    def is_msp(self) -> bool:
        return self.parent_id is None

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.name!r}>"


class AllowEntry(db.Model):
    """A sender address or domain (no @) whose mail belongs to this client."""

    __tablename__ = "allow_entries"
    __table_args__ = (
        UniqueConstraint("client_id", "value"),
        Index("ix_allow_entries_msp_value", "msp_id", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # "address" or "domain"
    value: Mapped[str] = mapped_column(String(320))

    client: Mapped[Client] = relationship(back_populates="allow_entries", foreign_keys=[client_id])

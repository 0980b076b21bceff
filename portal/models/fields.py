"""An MSP's custom ticket fields and their values on tickets."""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db

FIELD_KINDS = ("text", "number", "choice", "date")


class CustomField(db.Model):
    __tablename__ = "custom_fields"
    __table_args__ = (UniqueConstraint("msp_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(10))  # FIELD_KINDS
    choices: Mapped[list[str]] = mapped_column(JSON, default=list)  # a choice field's values, in order
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TicketFieldValue(db.Model):
    """One field's value on one ticket, as text: a number as typed digits, a date as YYYY-MM-DD, so
    that the list filters with one indexed equality."""

    __tablename__ = "ticket_field_values"
    __table_args__ = (
        UniqueConstraint("ticket_id", "field_id"),
        Index("ix_ticket_field_values_msp_field_value", "msp_id", "field_id", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    field_id: Mapped[int] = mapped_column(ForeignKey("custom_fields.id", ondelete="CASCADE"))
    value: Mapped[str] = mapped_column(String(500))

    field: Mapped[CustomField] = relationship()
    ticket: Mapped["Ticket"] = relationship()  # noqa: F821 - portal.models.tickets

"""Raw mail as fetched, contacts, tickets and their messages."""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.clients import Client
from portal.models.mailboxes import Mailbox

TICKET_STATUSES = ("new", "open", "waiting", "resolved", "closed", "archived", "merged", "split")
PRIORITIES = ("low", "normal", "high")
OUTCOMES = ("created", "appended", "reopened", "duplicate", "own", "unprocessed", "ignored", "failed")


class RawMessage(db.Model):
    """One fetched email, byte for byte, committed before the server is told anything."""

    __tablename__ = "raw_messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "folder", "uidvalidity", "server_id"),
        Index("ix_raw_messages_mailbox_state", "mailbox_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    folder: Mapped[str] = mapped_column(String(255), default="")
    uidvalidity: Mapped[int] = mapped_column(Integer, default=0)
    # IMAP UID or POP3 UIDL; for mail handed in on the command line, the file name.
    server_id: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    # None only for a message over the size limit, kept as a record without its bytes.
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the mail server received it (IMAP INTERNALDATE, Graph receivedDateTime, LMTP receipt);
    # None where the server gives none: fetched_at stands in.
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # new → decided, or failed (retried, then shown as unprocessed with the error)
    state: Mapped[str] = mapped_column(String(10), default="new")
    tries: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The after-processing action (seen / move / delete) has been done on the server.
    server_done: Mapped[bool] = mapped_column(Boolean, default=False)

    mailbox: Mapped[Mailbox | None] = relationship()


class Contact(db.Model):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("msp_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client] = relationship(foreign_keys=[client_id])


class Ticket(db.Model):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("msp_id", "number"),
        UniqueConstraint("msp_id", "reference"),
        # The ticket list's sorts and filters (migration 0005, which also adds full-text search).
        Index("ix_tickets_msp_updated", "msp_id", "updated_at", "id"),
        Index("ix_tickets_msp_created", "msp_id", "created_at", "id"),
        Index("ix_tickets_msp_status_updated", "msp_id", "status", "updated_at", "id"),
        Index("ix_tickets_msp_priority_updated", "msp_id", "priority", "updated_at", "id"),
        Index("ix_tickets_client_updated", "client_id", "updated_at", "id"),
        Index("ix_tickets_msp_id_first_response_due_at", "msp_id", "first_response_due_at"),
        Index("ix_tickets_msp_id_resolution_due_at", "msp_id", "resolution_due_at"),
        # The open ticket of a monitoring problem (portal.inbound.alerts).
        Index("ix_tickets_msp_alert_key", "msp_id", "alert_key"),
        # The types in use, one probe each (services.tickets.types_in_use; migration 0022).
        Index("ix_tickets_msp_type", "msp_id", "type", postgresql_where=text("type IS NOT NULL"),
              sqlite_where=text("type IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    number: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(40))
    # Goes into the Message-IDs of our mail about this ticket: <uuid.ticket-uuid@host>.
    uuid: Mapped[str] = mapped_column(String(32), default=lambda: uuid_module.uuid4().hex, unique=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    subject: Mapped[str] = mapped_column(String(998), default="")
    status: Mapped[str] = mapped_column(String(10), default="new")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    type: Mapped[str | None] = mapped_column(String(60))
    source: Mapped[str] = mapped_column(String(20), default="email")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    new_information: Mapped[bool] = mapped_column(Boolean, default=True)
    # Addresses copied on the conversation: they may write into it by reference too.
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    split_from_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Service level: the policy, when the clock started (the server's receive time of the first
    # mail), the due times, when the first public reply and the resolution came, when the clock
    # was paused (waiting on the customer) and for how many business minutes in all, the warnings and breaches already sent.
    sla_policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id", ondelete="SET NULL"))
    sla_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_paused_minutes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sla_sent: Mapped[list[str] | None] = mapped_column(JSON)
    # Alert rules (portal.inbound.alerts): the monitoring problem this ticket stands for, its last
    # state (problem, recovery), how many alert mails came and when, whether it flaps, and the
    # times (ISO) of its recent state changes, which decide flapping.
    alert_key: Mapped[str | None] = mapped_column(String(300))
    alert_state: Mapped[str | None] = mapped_column(String(10))
    alert_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    alert_first_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    alert_last_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    alert_flapping: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    alert_changes: Mapped[list[str] | None] = mapped_column(JSON)

    client: Mapped[Client] = relationship(foreign_keys=[client_id])
    contact: Mapped[Contact | None] = relationship()
    mailbox: Mapped[Mailbox | None] = relationship()
    merged_into: Mapped[Ticket | None] = relationship(remote_side="Ticket.id", foreign_keys=[merged_into_id])
    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")

    def __repr__(self) -> str:
        return f"<Ticket {self.reference} {self.status}>"


class TicketLink(db.Model):
    """Two tickets that belong together: a follow-up of a closed one, or the same
    conversation in another mailbox."""

    __tablename__ = "ticket_links"
    __table_args__ = (UniqueConstraint("ticket_id", "linked_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    linked_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # follow-up, other-mailbox
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    ticket: Mapped[Ticket] = relationship(foreign_keys=[ticket_id])
    linked: Mapped[Ticket] = relationship(foreign_keys=[linked_id])


class Message(db.Model):
    """One email in or out, or an internal note. Inbound ones also record what the pipeline
    decided (outcome and trace), whether or not a ticket came of it."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_msp_message_id", "msp_id", "message_id"),
        Index("ix_messages_mailbox_fp_raw", "mailbox_id", "fp_raw"),
        Index("ix_messages_mailbox_fp_content", "mailbox_id", "fp_content"),
        Index("ix_messages_mailbox_fp_envelope", "mailbox_id", "fp_envelope"),
        Index("ix_messages_msp_outcome", "msp_id", "outcome"),
        # The outbox (workers.sending): outbound mail only, as inbound mail and notes have no delivery.
        Index("ix_messages_outbox", "delivery", "id", postgresql_where=text("delivery IS NOT NULL"),
              sqlite_where=text("delivery IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    raw_message_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), unique=True)
    direction: Mapped[str] = mapped_column(String(5), default="in")  # in, out, note
    outcome: Mapped[str | None] = mapped_column(String(12))
    message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    from_address: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    to: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    cc: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(String(998), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What goes on the ticket (cut at the waterline) and the whole body.
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    full_text: Mapped[str] = mapped_column(Text, default="")
    auto_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_reason: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    fp_raw: Mapped[str | None] = mapped_column(String(64))
    fp_content: Mapped[str | None] = mapped_column(String(64))
    fp_envelope: Mapped[str | None] = mapped_column(String(64))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    trace: Mapped[list[str]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Outbound only: queued, sent, retrying, failed, held (a loop limit), blocked (staging), sending
    # (a server may be taking it), uncertain (its sending run stopped then: it may have arrived)
    delivery: Mapped[str | None] = mapped_column(String(10))
    delivery_note: Mapped[str | None] = mapped_column(Text)
    # Outbound only: the bytes as composed, kept like inbound raw mail.
    raw_out: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # Who wrote it (technician replies and notes).
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    ticket: Mapped[Ticket | None] = relationship(back_populates="messages")
    raw_message: Mapped[RawMessage | None] = relationship()
    duplicate_of: Mapped[Message | None] = relationship(remote_side="Message.id", foreign_keys=[duplicate_of_id])
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class Attachment(db.Model):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content_id: Mapped[str | None] = mapped_column(String(255))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)

    message: Mapped[Message] = relationship(back_populates="attachments")

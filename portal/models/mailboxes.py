"""Mailboxes (inbound connections), their routes, folder sync state and health."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.clients import Client

MAILBOX_STATUSES = ("draft", "active", "disabled")
AFTER_ACTIONS = {"imap": ("seen", "move", "delete"), "pop3": ("keep", "delete")}
PLUS_MODES = ("off", "mixed", "only")
DIRECTIONS = ("incoming", "outgoing", "both")
DEFAULT_PORTS = {("imap", "ssl"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                 ("pop3", "ssl"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}


class Mailbox(db.Model):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    # The mailbox's own client: catch-all for new mail no allow-list claims.
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    # Not unique: drafts may share an address; only an active mailbox whose last connection test
    # succeeded claims it (services.mailboxes.claimed_elsewhere), so no MSP learns about another's.
    address: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(10), default="draft")
    direction: Mapped[str] = mapped_column(String(10), default="both")

    protocol: Mapped[str] = mapped_column(String(10), default="imap")
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=993)
    security: Mapped[str] = mapped_column(String(10), default="ssl")
    username: Mapped[str] = mapped_column(String(320), default="")
    # Fernet token of the password (portal.secrets); never sent back to the browser.
    password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Open a shared/other mailbox with the same login (SASL PLAIN authorisation identity).
    shared_mailbox: Mapped[str | None] = mapped_column(String(320))
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)

    folders: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["INBOX"])
    after_action: Mapped[str] = mapped_column(String(10), default="seen")
    processed_folder: Mapped[str | None] = mapped_column(String(255))
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)

    response_address: Mapped[str | None] = mapped_column(String(320))
    acknowledge: Mapped[bool] = mapped_column(Boolean, default=True)
    alert_recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_status: Mapped[str] = mapped_column(String(20), default="new")
    default_priority: Mapped[str] = mapped_column(String(10), default="normal")
    default_type: Mapped[str | None] = mapped_column(String(60))
    # Mail matching these is kept and recorded but creates nothing (monitoring noise, no-reply).
    ignore_senders: Mapped[list[str]] = mapped_column(JSON, default=list)
    ignore_subjects: Mapped[list[str]] = mapped_column(JSON, default=list)
    plus_addressing: Mapped[str] = mapped_column(String(10), default="off")
    keep_raw_attachment: Mapped[bool] = mapped_column(Boolean, default=False)

    poll_interval: Mapped[int] = mapped_column(Integer, default=60)  # seconds
    timeout: Mapped[int] = mapped_column(Integer, default=30)  # seconds
    max_tries: Mapped[int] = mapped_column(Integer, default=3)
    cool_off: Mapped[int] = mapped_column(Integer, default=900)  # seconds
    skip_windows: Mapped[list[str]] = mapped_column(JSON, default=list)  # "02:00-04:00", UTC
    sync_start_date: Mapped[date | None] = mapped_column(Date)

    # Health
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    streak_alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_test_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_test_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client] = relationship(foreign_keys=[client_id])
    routes: Mapped[list[Route]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan", order_by="Route.position"
    )
    folder_states: Mapped[list[FolderState]] = relationship(cascade="all, delete-orphan")

    @property
    def addresses(self) -> list[str]:
        """The primary address and the aliases: every address this mailbox answers to."""
        return [self.address, *self.aliases]

    def __repr__(self) -> str:
        return f"<Mailbox {self.address}>"


class Route(db.Model):
    """An ordered rule on a mailbox: conditions → client and ticket defaults."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)  # ["*"] = wildcard
    senders: Mapped[list[str]] = mapped_column(JSON, default=list)  # addresses, domains, *@domain
    subject_keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    attachment_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # extensions or types
    high_importance_only: Mapped[bool] = mapped_column(Boolean, default=False)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    acknowledge: Mapped[bool] = mapped_column(Boolean, default=True)
    acknowledge_cc: Mapped[bool] = mapped_column(Boolean, default=False)
    default_status: Mapped[str | None] = mapped_column(String(20))
    default_priority: Mapped[str | None] = mapped_column(String(10))
    default_type: Mapped[str | None] = mapped_column(String(60))

    mailbox: Mapped[Mailbox] = relationship(back_populates="routes")
    client: Mapped[Client] = relationship()

    @property
    def wildcard(self) -> bool:
        return "*" in self.recipients


class FolderState(db.Model):
    """Where fetching stopped in one IMAP folder; a new UIDVALIDITY starts it over."""

    __tablename__ = "folder_states"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(Integer)
    last_uid: Mapped[int] = mapped_column(Integer, default=0)


class MailboxAlert(db.Model):
    """An alert to a mailbox's alert recipients, recorded once per failure streak."""

    __tablename__ = "mailbox_alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))  # mailbox_failing, mailbox_recovered
    message: Mapped[str] = mapped_column(Text)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

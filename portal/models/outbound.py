"""What Tidemark sends: email templates, SMTP servers, installation settings, and the log that
keeps automatic mail from looping with other systems' auto-responders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class EmailTemplate(db.Model):
    """A client's own text for one event. First line = subject; text and/or HTML variant."""

    __tablename__ = "email_templates"
    __table_args__ = (UniqueConstraint("client_id", "event", "variant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    # Alternatives of one event's template (a mailbox or route picks one); "" is the standard one.
    variant: Mapped[str] = mapped_column(String(40), default="", server_default="")
    text_source: Mapped[str | None] = mapped_column(Text)
    html_source: Mapped[str | None] = mapped_column(Text)
    # The simple editor's template: a subject line and a rich-text body (sanitised HTML with
    # {{ variables }}). When body is set both parts are made from it inside the MSP's EmailLayout
    # and the two raw sources above are empty.
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    # Sub-clients without their own template for this event use this one (always for the MSP's).
    shared: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailLayout(db.Model):
    """The frame an MSP's rich-text templates are sent in: CSS (inlined when sending) and a header
    and footer (Jinja with the templates' variables). No row: the built-in layout."""

    __tablename__ = "email_layouts"

    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    css: Mapped[str] = mapped_column(Text, default="")
    header: Mapped[str] = mapped_column(Text, default="")
    footer: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CannedResponse(db.Model):
    """A ready-made reply body a technician inserts while answering. Like templates, a client sees
    its own and those its ancestors share; a nearer client's response replaces one of the same name."""

    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("client_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    # Sanitised HTML as written in the editor; the plain-text part is derived when sending.
    body_html: Mapped[str] = mapped_column(Text, default="")
    # Sub-clients see this response too.
    shared: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SmtpServer(db.Model):
    """An outgoing server: the installation's default gateway (no mailbox), or a mailbox's own."""

    __tablename__ = "smtp_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), unique=True)
    # Neither mailbox nor MSP: the installation's gateway; an MSP and no mailbox: that MSP's own gateway.
    msp_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=587)
    security: Mapped[str] = mapped_column(String(10), default="starttls")
    username: Mapped[str | None] = mapped_column(String(320))
    password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    from_address: Mapped[str | None] = mapped_column(String(320))
    timeout: Mapped[int] = mapped_column(Integer, default=30)
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    # "password" logs in with username and password; "oauth2" with the access token of the mailbox
    # the server belongs to (AUTH XOAUTH2), the mailbox's username as the sender.
    auth: Mapped[str] = mapped_column(String(10), default="password", server_default="password")
    # The last connection test, as a mailbox keeps its own.
    last_test_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_test_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_test_message: Mapped[str | None] = mapped_column(Text)


class Setting(db.Model):
    """Installation-wide switches (staging: block outgoing mail, override recipients; limits)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class MspSetting(db.Model):
    """An MSP's own value of one of the installation's mail settings (no row: the installation's)."""

    __tablename__ = "msp_settings"

    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class AutoMailLog(db.Model):
    """One automatic mail sent (or held back) to one address: the loop limits count these."""

    __tablename__ = "auto_mail_log"
    __table_args__ = (Index("ix_auto_mail_log_address_at", "address", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"))
    address: Mapped[str] = mapped_column(String(320))
    subject_key: Mapped[str] = mapped_column(String(998))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))

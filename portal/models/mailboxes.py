"""Mailboxes (inbound connections), their routes, folder sync state and health."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import CertificateCredential, UTCDateTime, utcnow
from portal.models.clients import Client

MAILBOX_STATUSES = ("draft", "active", "disabled")
# What a mailbox speaks: the two mail protocols of portal.transport, Microsoft Graph over HTTPS,
# and LMTP: mail pushed by the MSP's own MTA to workers.lmtp (no server to reach, nothing to fetch).
MAILBOX_PROTOCOLS = ("imap", "pop3", "graph", "lmtp")
AUTH_METHODS = ("password", "oauth2")
GRAPH_API_URL = "https://graph.microsoft.com/v1.0"
# Graph marks a message read or moves it after the commit, as IMAP does.
AFTER_ACTIONS = {"imap": ("seen", "move", "delete"), "pop3": ("keep", "delete"), "graph": ("seen", "move"),
                 "lmtp": ("keep",)}
PLUS_MODES = ("off", "mixed", "only")
# Automatic mail (auto-reply, out-of-office, bounce) that threads to no ticket: "record" keeps it
# among the unprocessed mail, with no ticket and no alert; "ticket" routes it like other mail.
AUTOMATIC_MAIL_MODES = ("record", "ticket")
# "incoming": fetched, and its mail goes out through the default gateway (never its own outgoing
# server or Graph); "outgoing": never fetched, it only sends; "both".
DIRECTIONS = ("incoming", "outgoing", "both")
# Images in our HTML mail: related parts the HTML names by cid: (default), or base64 data: URLs.
EMBED_IMAGES = ("cid", "inline")
# The largest email a mailbox may set (bytes); None stores "the installation's" (40 MB).
MAX_MESSAGE_SIZE_LIMIT = 200 * 1024 * 1024
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
    # "password" signs in with the password above, "oauth2" with the grant in `oauth`.
    auth: Mapped[str] = mapped_column(String(10), default="password", server_default="password")
    # Graph only (no host or port there): the API's root, overridable for tests.
    api_url: Mapped[str | None] = mapped_column(String(2000))

    folders: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["INBOX"])
    after_action: Mapped[str] = mapped_column(String(10), default="seen")
    processed_folder: Mapped[str | None] = mapped_column(String(255))
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)

    response_address: Mapped[str | None] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))  # Reply-To of our mail, when not From
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
    automatic_mail: Mapped[str] = mapped_column(String(10), default="record", server_default="record")
    # Mail from senders no allow-list or contact knows is kept and recorded as ignored.
    accept_only_allowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    max_message_size: Mapped[int | None] = mapped_column(Integer)  # bytes; None: the installation's
    embed_images: Mapped[str] = mapped_column(String(10), default="cid", server_default="cid")  # cid | inline
    # Which alternative of the client's acknowledgement template its new tickets get (None: the standard one).
    acknowledgement_variant: Mapped[str | None] = mapped_column(String(40))
    # The SLA policy of the tickets it creates (None: the client's); a route's wins.
    sla_policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id", ondelete="SET NULL"))

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
    graph_subscriptions: Mapped[list[GraphSubscription]] = relationship(cascade="all, delete-orphan",
                                                                         order_by="GraphSubscription.folder")
    oauth: Mapped[MailboxOAuth | None] = relationship(back_populates="mailbox", cascade="all, delete-orphan",
                                                      uselist=False)

    @property
    def addresses(self) -> list[str]:
        """The primary address and the aliases: every address this mailbox answers to."""
        return [self.address, *self.aliases]

    @property
    def from_addresses(self) -> list[str]:
        """The addresses our mail may be From, the default first: the response address (else the
        primary address), then the primary address and the aliases; each once."""
        found: dict[str, str] = {}
        for address in (self.response_address or self.address, self.address, *(self.aliases or [])):
            if address:
                found.setdefault(address.lower(), address)
        return list(found.values())

    @property
    def fetches(self) -> bool:
        """Whether mail is read from this mailbox (its direction is not "outgoing only")."""
        return self.direction != "outgoing"

    @property
    def sends_itself(self) -> bool:
        """Whether its own outgoing server (or Graph) sends its mail ("incoming only": the gateway)."""
        return self.direction != "incoming"

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
    # A route in test records what it would have done (and how often) without doing it.
    test_mode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    test_hits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # As the mailbox's, for the tickets this route opens; it wins over the mailbox's.
    acknowledgement_variant: Mapped[str | None] = mapped_column(String(40))
    # The SLA policy of the tickets it creates (None: the client's); a route's wins.
    sla_policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id", ondelete="SET NULL"))
    # Extraction rules: [{"source": "subject" | "body" | "header:NAME", "pattern": regex with one
    # named group, "target": "type" | "priority" | "sla" | "contact" | "field:NAME"}] (portal.mail.extract).
    extraction_rules: Mapped[list[dict] | None] = mapped_column(JSON, default=list)
    # How it reads a problem key and state from monitoring mail (portal.mail.alerts); None: no alert rule.
    alert_rule: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    mailbox: Mapped[Mailbox] = relationship(back_populates="routes")
    client: Mapped[Client] = relationship()

    @property
    def wildcard(self) -> bool:
        return "*" in self.recipients


class FolderState(db.Model):
    """Where fetching stopped in one folder. IMAP: the last UID, and a new UIDVALIDITY starts it
    over. Graph: the delta link of the last round (uidvalidity 0), stored once its mail is committed."""

    __tablename__ = "folder_states"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(Integer)
    last_uid: Mapped[int] = mapped_column(Integer, default=0)
    delta_link: Mapped[str | None] = mapped_column(Text)


class GraphSubscription(db.Model):
    """A Graph mailbox's change-notification subscription for one folder (portal.inbound.graph_push).
    `subscription_id` None: not subscribed, `problem` says why (creation refused, no token). The
    clientState is a secret Graph echoes in every notification: a Fernet token, like passwords."""

    __tablename__ = "graph_subscriptions"
    __table_args__ = (UniqueConstraint("mailbox_id", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    client_state_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    problem: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    SECRET_COLUMNS = ("client_state_encrypted",)


class MailboxAlert(db.Model):
    """An alert to a mailbox's alert recipients (portal.services.mailbox_alerts): once per failure
    or "reconnect needed" streak, and per expiry date and threshold for grants and client secrets."""

    __tablename__ = "mailbox_alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # mailbox_failing, mailbox_recovered, reconnect_needed, grant_expiring, secret_expiring
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


OAUTH_PROVIDERS = ("microsoft", "google", "generic")
OAUTH_FLOWS = ("delegated", "app")
GRANT_STATES = ("not connected", "connected", "reconnect needed")


class MailboxOAuth(CertificateCredential, db.Model):
    """A mailbox's OAuth2 app (provider, client, where its tokens come from) and its grant.

    A row of its own rather than columns of `mailboxes`: password mailboxes carry none of it, and
    the grant is rewritten at every token refresh, which then never touches (nor waits for) the
    mailbox row that fetching updates. Every secret is a Fernet token (portal.crypto), like the
    mailbox password; tokens are state, not configuration, and are never exported.
    """

    __tablename__ = "mailbox_oauth"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    flow: Mapped[str] = mapped_column(String(20), default="delegated")
    tenant: Mapped[str | None] = mapped_column(String(255))  # microsoft: GUID, domain or "organizations"
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_expires: Mapped[date | None] = mapped_column(Date)  # typed in by the admin, for the alerts
    token_url: Mapped[str | None] = mapped_column(String(2000))  # generic; the others derive theirs
    authorize_url: Mapped[str | None] = mapped_column(String(2000))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: the provider's defaults

    # The grant: what the provider gave, and whether it still works.
    state: Mapped[str] = mapped_column(String(20), default="not connected")
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    account: Mapped[str | None] = mapped_column(String(320))  # who consented (delegated)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    grant_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the provider says

    mailbox: Mapped[Mailbox] = relationship(back_populates="oauth")

    SECRET_COLUMNS = ("client_secret_encrypted", "certificate_encrypted", "refresh_token_encrypted",
                      "access_token_encrypted")

"""The mailbox, route and outgoing-server forms. WTForms only carries and renders the values:
the rules live in portal.services.mailboxes, whose messages land next to these fields."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField, TextAreaField

from portal.models.mailboxes import DEFAULT_PORTS, GRAPH_API_URL
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.services.routes import RouteInput
from portal.transport.base import PROTOCOLS, SECURITIES

# The values are what portal.transport.base speaks (PROTOCOLS, SECURITIES); the forms only name them.
_LABELS = {"imap": "IMAP", "pop3": "POP3", "graph": "Microsoft Graph",
           "ssl": "SSL/TLS", "starttls": "STARTTLS", "none": "none (trusted network only)"}
PROTOCOL_CHOICES = [(p, _LABELS[p]) for p in PROTOCOLS]
SECURITY_CHOICES = [(s, _LABELS[s]) for s in SECURITIES]
# An outgoing server offers STARTTLS first: submission on port 587 is the usual way in.
SMTP_SECURITY_CHOICES = sorted(SECURITY_CHOICES, key=lambda choice: choice[0] != "starttls")
STATUS_CHOICES = [("draft", "Draft: saved, not fetched"), ("active", "Active: fetched"), ("disabled", "Disabled")]
TICKET_STATUS_CHOICES = [(s, s) for s in TICKET_STATUSES[:3]]
PRIORITY_CHOICES = [(p, p) for p in PRIORITIES]
AUTH_CHOICES = [("password", "password"), ("oauth2", "OAuth2 (Microsoft 365, Google Workspace, other)")]
OAUTH_PROVIDER_CHOICES = [("microsoft", "Microsoft (Entra ID)"), ("google", "Google"), ("generic", "other OAuth2 server")]
OAUTH_FLOW_CHOICES = [("delegated", "delegated: a person signs in once (Connect)"),
                      ("app", "app: client credentials, no one signs in (Microsoft)")]
# Presets for the mailbox form: what the big providers' mail servers want (static/mailboxes.js
# fills the fields; without script they are typed by hand).
PRESETS = [
    ("Microsoft 365", {"protocol": "imap", "host": "outlook.office365.com", "port": "993", "security": "ssl",
                       "auth": "oauth2", "oauth_provider": "microsoft"}),
    ("Google Workspace", {"protocol": "imap", "host": "imap.gmail.com", "port": "993", "security": "ssl",
                          "auth": "oauth2", "oauth_provider": "google"}),
    ("Microsoft 365 (Graph)", {"protocol": "graph", "host": "", "auth": "oauth2", "oauth_provider": "microsoft"}),
]
# And for the outgoing server: submission with STARTTLS.
OUTGOING_PRESETS = [
    ("Microsoft 365", {"host": "smtp.office365.com", "port": "587", "security": "starttls"}),
    ("Google Workspace", {"host": "smtp.gmail.com", "port": "587", "security": "starttls"}),
]


def outgoing_presets(mailbox_auth: str) -> list[tuple[str, dict]]:
    """The outgoing presets; an OAuth2 mailbox's also sign in with its grant (only it has one)."""
    if mailbox_auth != "oauth2":
        return OUTGOING_PRESETS
    return [(name, {**values, "auth": "oauth2"}) for name, values in OUTGOING_PRESETS]


def lines(text: str | None, commas: bool = False) -> list[str]:
    """One value a line (and, for addresses, also separated by commas or semicolons)."""
    parts = re.split(r"[\n,;]" if commas else r"\n", text or "")
    return [p.strip() for p in parts if p.strip()]


def number(text: str | None):
    """An int when the text is one; otherwise the text itself, for the service to name."""
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"\d{1,9}", text) else text


def place(errors: dict, known: set[str], renamed: dict | None = None) -> dict:
    """Messages for fields the form has stay by their field; the rest go to the form as a whole."""
    out: dict[str, list[str]] = {}
    for key, messages in errors.items():
        key = (renamed or {}).get(key, key)
        out.setdefault(key if key in known else "", []).extend(messages)
    return out


class SecretTextArea(TextAreaField):
    """A pasted secret (a certificate's private key): taken, never rendered back, not even after an error."""

    def _value(self):
        return ""


class _Form(FlaskForm):
    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}


class MailboxForm(_Form):
    address = StringField("Primary address", description="The address customers write to, e.g. support@msp.example.")
    aliases = TextAreaField("Aliases", description="Other addresses this mailbox receives, one a line.")
    name = StringField("Name", description="How the mailbox reads in lists. Empty: the address.")
    client_id = SelectField("Client", coerce=int, validate_choice=True,
                            description="New mail that no route or allow-list places becomes a ticket of this client.")
    status = SelectField("Status", choices=STATUS_CHOICES)
    direction = SelectField("Direction", choices=[("both", "incoming and outgoing"), ("incoming", "incoming only"),
                                                  ("outgoing", "outgoing only")])

    protocol = SelectField("Protocol", choices=PROTOCOL_CHOICES)
    security = SelectField("Security", choices=SECURITY_CHOICES)
    host = StringField("Server", description="Host name or IP address, e.g. imap.example.net.")
    port = StringField("Port", description="Empty: the usual port for the protocol and security.")
    username = StringField("User name")
    password = PasswordField("Password", description="Or app password. Stored encrypted; never shown again.")
    shared_mailbox = StringField("Shared mailbox to open",
                                 description="Log in as the user above but read this (shared) mailbox. Usually empty.")
    verify_tls = BooleanField("Check the server's TLS certificate")
    api_url = StringField("Graph API URL", description=f"Empty: {GRAPH_API_URL}.")

    auth = SelectField("Sign in with", choices=AUTH_CHOICES, default="password")
    oauth_provider = SelectField("Provider", choices=OAUTH_PROVIDER_CHOICES, default="microsoft")
    oauth_flow = SelectField("Flow", choices=OAUTH_FLOW_CHOICES, default="delegated")
    oauth_tenant = StringField("Tenant", description="The customer's tenant id, a domain such as "
                               "contoso.onmicrosoft.com, or organizations (any work account; delegated only). "
                               "App flow: leave it empty to use the tenant the client consented from.")
    oauth_client_id = StringField("Client id", description="The app's client (application) id. App flow with "
                                  "Microsoft: leave it empty to use your MSP's Microsoft 365 app.")
    oauth_client_secret = PasswordField("Client secret", description="Stored encrypted; never shown again. "
                                        "A public app (delegated, PKCE) has none.")
    oauth_secret_expires = StringField("Client secret expires", description="Optional, for the reminders, "
                                       "e.g. 2027-06-30.")
    oauth_certificate = SecretTextArea("Certificate instead of the secret (PEM)", description="The RSA private key "
                                      "(2048 bits or more) and its certificate; its expiry is the certificate's "
                                      "own. Stored encrypted; never shown again. Empty: keep the stored one.")
    oauth_authorize_url = StringField("Authorisation URL", description="Where a person signs in (delegated).")
    oauth_token_url = StringField("Token URL")
    oauth_scopes = TextAreaField("Scopes", description="One a line. Empty: what the provider needs for the "
                                 "protocol (Microsoft, Google).")

    folders = TextAreaField("Folders to read", description="One a line; usually INBOX.")
    after_action_imap = SelectField("After processing", choices=[
        ("seen", "mark as read"), ("move", "move to a folder"), ("delete", "delete from the server")])
    processed_folder = StringField("Move processed mail to", description="The folder, e.g. Processed.")
    after_action_pop3 = SelectField("After processing", choices=[
        ("keep", "leave on the server"), ("delete", "delete from the server")])

    response_address = StringField("Reply from", description="The From address of our mail. Empty: the primary address.")
    acknowledge = BooleanField("Acknowledge new tickets to the sender")
    alert_recipients = TextAreaField("Alert recipients",
                                     description="Who hears when this mailbox fails, one address a line.")
    default_status = SelectField("Status of new tickets", choices=TICKET_STATUS_CHOICES)
    default_priority = SelectField("Priority of new tickets", choices=PRIORITY_CHOICES)
    default_type = StringField("Type of new tickets", description="e.g. incident. Optional.")
    ignore_senders = TextAreaField("Ignore mail from",
                                   description="Addresses or domains, one a line: kept and recorded, creates nothing.")
    ignore_subjects = TextAreaField("Ignore subjects with", description="Keywords, one a line.")
    plus_addressing = SelectField("Plus-addressing", choices=[
        ("off", "off"), ("mixed", "mixed: the ticket tag, then the other ways to find a ticket"),
        ("only", "only: the ticket tag alone finds a ticket")])
    keep_raw_attachment = BooleanField("Attach the original email (.eml) to new tickets")
    automatic_mail = SelectField("Auto-replies that answer no ticket", default="record", choices=[
        ("record", "record it among the unprocessed mail: no ticket, no alert"),
        ("ticket", "open a ticket, as for any other mail")],
        description="Out-of-office replies and other auto-replies. One that answers a ticket always goes onto "
                    "that ticket; monitoring alerts, list mail and bounces are not auto-replies and open tickets.")

    poll_interval = StringField("Fetch every (seconds)")
    timeout = StringField("Connection timeout (seconds)")
    max_tries = StringField("Tries before failing")
    cool_off = StringField("Wait after a failure (seconds)")
    skip_windows = TextAreaField("Do not fetch between", description="UTC windows, one a line, e.g. 02:00-04:00.")
    sync_start_date = StringField("Skip mail dated before", description="Optional, e.g. 2026-01-31.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._offer(self.protocol.data)

    def _offer(self, protocol) -> None:
        # Graph is offered always: the "Microsoft 365 (Graph)" preset picks it.
        if ("graph", _LABELS["graph"]) not in self.protocol.choices:
            self.protocol.choices = [*PROTOCOL_CHOICES, ("graph", _LABELS["graph"])]

    LIST_FIELDS = {"aliases": True, "alert_recipients": True, "ignore_senders": True, "ignore_subjects": False,
                   "folders": False, "skip_windows": True}
    NUMBER_FIELDS = ("poll_interval", "timeout", "max_tries", "cool_off")
    TEXT_FIELDS = ("address", "name", "host", "username", "shared_mailbox", "processed_folder", "response_address",
                   "default_type", "sync_start_date")

    def fill(self, mailbox) -> None:
        """Show a stored mailbox (never its password)."""
        for key in self.TEXT_FIELDS:
            getattr(self, key).data = getattr(mailbox, key) or ""
        for key in self.LIST_FIELDS:
            getattr(self, key).data = "\n".join(getattr(mailbox, key) or [])
        for key in self.NUMBER_FIELDS:
            getattr(self, key).data = str(getattr(mailbox, key))
        for key in ("status", "direction", "protocol", "security", "client_id", "verify_tls", "acknowledge",
                    "default_status", "default_priority", "plus_addressing", "keep_raw_attachment", "automatic_mail"):
            getattr(self, key).data = getattr(mailbox, key)
        self.port.data = str(mailbox.port)
        self._offer(mailbox.protocol)
        if mailbox.protocol != "pop3":  # Graph marks read or moves, as IMAP does
            self.after_action_imap.data = mailbox.after_action
        else:
            self.after_action_pop3.data = mailbox.after_action
        if mailbox.sync_start_date:
            self.sync_start_date.data = mailbox.sync_start_date.isoformat()
        self.auth.data, self.api_url.data = mailbox.auth, mailbox.api_url or ""
        self._fill_oauth(mailbox.oauth)

    OAUTH_TEXT = ("tenant", "client_id", "authorize_url", "token_url")

    def _fill_oauth(self, row) -> None:
        """A stored mailbox's OAuth2 settings (never its client secret)."""
        if row is None:
            self.oauth_flow.data = "delegated"
            return
        self.oauth_provider.data, self.oauth_flow.data = row.provider, row.flow
        for key in self.OAUTH_TEXT:
            getattr(self, f"oauth_{key}").data = getattr(row, key) or ""
        self.oauth_secret_expires.data = row.secret_expires.isoformat() if row.secret_expires else ""
        self.oauth_scopes.data = "\n".join(row.scopes or [])

    def defaults(self) -> None:
        """A new mailbox: the model's defaults, shown."""
        self.status.data, self.direction.data, self.protocol.data, self.security.data = "draft", "both", "imap", "ssl"
        self.port.data = str(DEFAULT_PORTS[("imap", "ssl")])
        self.folders.data = "INBOX"
        self.verify_tls.data = self.acknowledge.data = True
        self.default_status.data, self.default_priority.data, self.plus_addressing.data = "new", "normal", "off"
        self.automatic_mail.data = "record"
        self.poll_interval.data, self.timeout.data, self.max_tries.data, self.cool_off.data = "60", "30", "3", "900"
        self.auth.data, self.oauth_provider.data, self.oauth_flow.data = "password", "microsoft", "delegated"

    def values(self) -> dict:
        """The settings by column name, as save_mailbox takes them."""
        out: dict = {key: (getattr(self, key).data or "").strip() for key in self.TEXT_FIELDS}
        out["shared_mailbox"] = out["shared_mailbox"] or None
        out["processed_folder"] = out["processed_folder"] or None
        out["response_address"] = out["response_address"] or None
        out["default_type"] = out["default_type"] or None
        out["sync_start_date"] = out["sync_start_date"] or None
        for key, commas in self.LIST_FIELDS.items():
            out[key] = lines(getattr(self, key).data, commas)
        for key in self.NUMBER_FIELDS:
            out[key] = number(getattr(self, key).data)
        out["port"] = number(self.port.data) if (self.port.data or "").strip() else None
        for key in ("status", "direction", "protocol", "security", "default_status", "default_priority",
                    "plus_addressing", "automatic_mail"):
            out[key] = getattr(self, key).data
        for key in ("verify_tls", "acknowledge", "keep_raw_attachment"):
            out[key] = bool(getattr(self, key).data)
        out["after_action"] = (self.after_action_pop3 if self.protocol.data == "pop3" else self.after_action_imap).data
        if self.password.data:
            out["password"] = self.password.data
        out["auth"] = self.auth.data
        if self.protocol.data == "graph":
            # Graph is reached through its API URL: a server typed before switching does not count.
            out["host"], out["api_url"] = "", (self.api_url.data or "").strip()
        if self.auth.data == "oauth2":
            out["oauth"] = self.oauth_values()
        return out

    def oauth_values(self) -> dict:
        """The `oauth` settings as save_mailbox takes them. Settings of another provider's (a
        tenant, a generic server's URLs) are left out, so a hidden field neither errs nor changes
        what is stored; an empty client secret keeps the stored one."""
        provider = self.oauth_provider.data
        given = {"provider": provider, "flow": self.oauth_flow.data,
                 "client_id": (self.oauth_client_id.data or "").strip(),
                 "secret_expires": (self.oauth_secret_expires.data or "").strip() or None,
                 "scopes": lines(self.oauth_scopes.data)}
        if provider == "microsoft":
            given["tenant"] = (self.oauth_tenant.data or "").strip()
        if provider == "generic":
            given["authorize_url"] = (self.oauth_authorize_url.data or "").strip() or None
            given["token_url"] = (self.oauth_token_url.data or "").strip() or None
        if self.oauth_client_secret.data:
            given["client_secret"] = self.oauth_client_secret.data
        if (self.oauth_certificate.data or "").strip():
            given["certificate"] = self.oauth_certificate.data
        return given

    def place_errors(self, errors: dict) -> None:
        """Service messages by field; "after processing" has one select per protocol."""
        errors = dict(errors)
        if "after_action" in errors:
            key = "after_action_pop3" if self.protocol.data == "pop3" else "after_action_imap"
            errors[key] = errors.pop("after_action")
        oauth = {key: key.replace(".", "_") for key in errors if key.startswith("oauth.")}
        self.service_errors = place(errors, set(self._fields), oauth)


class RouteForm(_Form):
    name = StringField("Name", description="e.g. Contoso helpdesk, or Everything else.")
    fallback = BooleanField("Fallback route: takes the new mail no other route takes",
                            description="Every mailbox with routes has exactly one; choosing it here takes the flag "
                            "from the route that has it.")
    recipients = TextAreaField("Recipients", description="Addresses this route takes, one a line; * alone takes mail "
                               "to any address (only with a sender list: that is how BCC'd mail is caught).")
    senders = TextAreaField("Senders", description="Addresses, domains or *@domain, one a line. Empty: anyone "
                            "(not allowed with *).")
    subject_keywords = TextAreaField("Subject contains", description="Keywords, one a line. Empty: any subject.")
    attachment_types = TextAreaField("Has an attachment of type", description="Extensions, e.g. pdf, one a line.")
    high_importance_only = BooleanField("Only mail marked as important")
    client_id = SelectField("Client", coerce=int, validate_choice=True, description="New tickets belong to this client.")
    acknowledge = BooleanField("Acknowledge new tickets to the sender")
    acknowledge_cc = BooleanField("Also acknowledge to the people in CC")
    default_status = SelectField("Status of new tickets", choices=[("", "as the mailbox says"), *TICKET_STATUS_CHOICES])
    default_priority = SelectField("Priority of new tickets", choices=[("", "as the mailbox says"), *PRIORITY_CHOICES])
    default_type = StringField("Type of new tickets", description="Empty: as the mailbox says.")
    enabled = BooleanField("Enabled")

    def fill(self, route) -> None:
        self.name.data = route.name
        for key in ("recipients", "senders", "subject_keywords", "attachment_types"):
            getattr(self, key).data = "\n".join(getattr(route, key) or [])
        for key in ("fallback", "high_importance_only", "client_id", "acknowledge", "acknowledge_cc", "enabled"):
            getattr(self, key).data = getattr(route, key)
        self.default_status.data = route.default_status or ""
        self.default_priority.data = route.default_priority or ""
        self.default_type.data = route.default_type or ""

    def route_input(self, client):
        # The fallback takes what nothing else takes: conditions typed before ticking it do not apply.
        when = not self.fallback.data
        return RouteInput(
            name=(self.name.data or "").strip(), client=client, fallback=bool(self.fallback.data),
            recipients=lines(self.recipients.data, True) if when else [],
            senders=lines(self.senders.data, True) if when else [],
            subject_keywords=lines(self.subject_keywords.data) if when else [],
            attachment_types=[t.lstrip(".").lower() for t in lines(self.attachment_types.data, True)] if when else [],
            high_importance_only=bool(self.high_importance_only.data) and when, enabled=bool(self.enabled.data),
            acknowledge=bool(self.acknowledge.data), acknowledge_cc=bool(self.acknowledge_cc.data),
            default_status=self.default_status.data or None, default_priority=self.default_priority.data or None,
            default_type=(self.default_type.data or "").strip() or None)


class OutgoingForm(_Form):
    host = StringField("Server", description="e.g. smtp.example.net.")
    port = StringField("Port", description="Empty: 465 for SSL/TLS, 587 for STARTTLS, 25 without.")
    security = SelectField("Security", choices=SMTP_SECURITY_CHOICES)
    auth = SelectField("Sign in with", choices=[("password", "User name and password"),
                                                ("oauth2", "The mailbox's OAuth2 grant (XOAUTH2)")],
                       default="password",
                       description="The grant needs the mailbox to sign in with OAuth2 and be connected.")
    username = StringField("User name", description="Empty: send without logging in. With the grant: empty "
                                                    "sends as the mailbox's own user name.")
    password = PasswordField("Password", description="Stored encrypted; never shown again.")
    from_address = StringField("Envelope sender", description="Optional; mail still reads From the mailbox's address.")
    timeout = StringField("Timeout (seconds)")
    verify_tls = BooleanField("Check the server's TLS certificate")

    def fill(self, server) -> None:
        self.host.data, self.port.data, self.security.data = server.host, str(server.port), server.security
        self.username.data, self.from_address.data = server.username or "", server.from_address or ""
        self.timeout.data, self.verify_tls.data = str(server.timeout), server.verify_tls
        self.auth.data = server.auth

    def values(self) -> dict:
        return {"host": (self.host.data or "").strip(), "port": number(self.port.data) if self.port.data else None,
                "security": self.security.data, "username": (self.username.data or "").strip() or None,
                "password": self.password.data or None, "from": (self.from_address.data or "").strip() or None,
                "timeout": number(self.timeout.data) if self.timeout.data else None, "verify_tls": bool(self.verify_tls.data),
                "auth": self.auth.data or "password"}

"""The mailbox, route and outgoing-server forms. WTForms only carries and renders the values:
the rules live in portal.services.mailboxes, whose messages land next to these fields."""

from __future__ import annotations

import re

from flask import g
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField, TextAreaField

from portal.display import place
from portal.mail.alerts import DEFAULT_FLAP_CHANGES, DEFAULT_FLAP_MINUTES, DEFAULT_PROBLEM, DEFAULT_RECOVERY
from portal.mailboxes import sections
from portal.models.mailboxes import DEFAULT_PORTS, GRAPH_API_URL
from portal.models.tickets import PRIORITIES, TICKET_STATUSES
from portal.services import sla
from portal.services.routes import RouteInput
from portal.transport.base import PROTOCOLS, SECURITIES, VERIFY_TLS_LABEL

# The values are what portal.transport.base speaks (PROTOCOLS, SECURITIES); the forms only name them.
_LABELS = {"imap": "IMAP", "pop3": "POP3", "graph": "Microsoft Graph", "lmtp": "LMTP (pushed by your mail server)",
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


def megabytes(size: int | None) -> str:
    """A stored size in bytes as the form shows it, in whole MB (empty: the installation's)."""
    if not size:
        return ""
    return str(size // 2**20) if size % 2**20 == 0 else f"{size / 2**20:.2f}".rstrip("0").rstrip(".")


class SecretTextArea(TextAreaField):
    """A pasted secret (a certificate's private key): taken, never rendered back, not even after an error."""

    def _value(self):
        return ""


class _Form(FlaskForm):
    service_errors: dict

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.service_errors = {}
        if hasattr(self, "sla_policy_id"):
            # The signed-in MSP's policies: another MSP's id is no choice, and is refused.
            self.sla_policy_id.choices = [("", "the client's")] + [
                (str(p.id), p.name) for p in (sla.policies(g.msp_id) if g.get("msp_id") else [])]

    def chosen_policy(self):
        """The SLA policy chosen (None: the client's)."""
        chosen = self.sla_policy_id.data or ""
        return sla.get_policy(g.msp_id, int(chosen)) if chosen else None

    def offer_acknowledgements(self, names: list[str]) -> None:
        """The acknowledgement templates the client may choose, after the empty choice; a stored
        name it no longer has stays offered, so that the form shows what is saved (the service
        refuses it on the next save, naming the ones there are)."""
        field = self.acknowledgement_variant
        current = (field.data or "").strip()
        offered = [*names, *([current] if current and current not in names else [])]
        field.choices = [field.choices[0], *((n, n) for n in offered)]


SLA_POLICY_HELP = ("The service level of the tickets it creates; a route's wins over its mailbox's. "
                   "Open tickets keep the one they have.")


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
    verify_tls = BooleanField(VERIFY_TLS_LABEL)
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

    # The folders the last connection test found (services.mailbox_checks), ticked; others typed below.
    folder_picks = SelectMultipleField("Folders on the server", choices=[], validate_choice=False)
    folders = TextAreaField("Folders to read", description="One a line; usually INBOX.")
    after_action_imap = SelectField("After processing", choices=[
        ("seen", "mark as read"), ("move", "move to a folder"), ("delete", "delete from the server")])
    processed_folder = StringField("Move processed mail to", description="The folder, e.g. Processed.")
    after_action_pop3 = SelectField("After processing", choices=[
        ("keep", "leave on the server"), ("delete", "delete from the server")])

    response_address = StringField("Reply from", description="The From address of our mail. Empty: the primary address.")
    reply_to = StringField("Reply-To", description="Where answers to our mail go, when not to the From address "
                           "(e.g. a shared desk address). Empty: the From address.")
    acknowledge = BooleanField("Acknowledge new tickets to the sender")
    acknowledgement_variant = SelectField(
        "Acknowledge with", choices=[("", "the standard acknowledgement")], validate_choice=False,
        description="Which of the client's acknowledgement templates new tickets get (a route may choose another).")
    alert_recipients = TextAreaField("Alert recipients",
                                     description="Who hears when this mailbox fails, one address a line.")
    default_status = SelectField("Status of new tickets", choices=TICKET_STATUS_CHOICES)
    default_priority = SelectField("Priority of new tickets", choices=PRIORITY_CHOICES)
    default_type = StringField("Type of new tickets", description="e.g. incident. Optional.")
    sla_policy_id = SelectField("SLA policy", default="", description=SLA_POLICY_HELP)
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

    accept_only_allowed = BooleanField("Accept mail only from allowed senders", description=(
        "Mail from a sender that no client's allow-list and no contact knows is kept and recorded as ignored "
        "(sender not allowed): no ticket, no acknowledgement."))
    embed_images = SelectField("Images in our mail", default="cid", choices=[
        ("cid", "attached, named in the HTML (cid:)"), ("inline", "embedded in the HTML (base64)")],
        description="Some mail programs show only one of the two ways.")
    max_message_size = StringField("Largest email (MB)", description=(
        "Larger mail is kept without its content and shown as unprocessed. Empty: the installation's 40 MB."))

    poll_interval = StringField("Fetch every (seconds)")
    timeout = StringField("Connection timeout (seconds)")
    max_tries = StringField("Tries before failing")
    cool_off = StringField("Wait after a failure (seconds)")
    skip_windows = TextAreaField("Do not fetch between", description="UTC windows, one a line, e.g. 02:00-04:00.")
    sync_start_date = StringField("Skip mail dated before", description="Optional, e.g. 2026-01-31.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._offer(self.protocol.data)

    def section(self, key: str) -> sections.Shown:
        """A section of the form as the page shows it: open or closed, its digest (mailboxes.sections)."""
        return sections.shown(self, key)

    def _offer(self, protocol) -> None:
        # Graph is offered always: the "Microsoft 365 (Graph)" preset picks it. LMTP too: its mail is
        # pushed to workers.lmtp, there is no server to reach (portal.transport speaks neither).
        if ("graph", _LABELS["graph"]) not in self.protocol.choices:
            self.protocol.choices = [*PROTOCOL_CHOICES, ("graph", _LABELS["graph"]), ("lmtp", _LABELS["lmtp"])]

    LIST_FIELDS = {"aliases": True, "alert_recipients": True, "ignore_senders": True, "ignore_subjects": False,
                   "folders": False, "skip_windows": True}
    NUMBER_FIELDS = ("poll_interval", "timeout", "max_tries", "cool_off")
    TEXT_FIELDS = ("address", "name", "host", "username", "shared_mailbox", "processed_folder", "response_address",
                   "reply_to", "default_type", "sync_start_date")

    def fill(self, mailbox) -> None:
        """Show a stored mailbox (never its password)."""
        for key in self.TEXT_FIELDS:
            getattr(self, key).data = getattr(mailbox, key) or ""
        for key in self.LIST_FIELDS:
            getattr(self, key).data = "\n".join(getattr(mailbox, key) or [])
        for key in self.NUMBER_FIELDS:
            getattr(self, key).data = str(getattr(mailbox, key))
        for key in ("status", "direction", "protocol", "security", "client_id", "verify_tls", "acknowledge",
                    "default_status", "default_priority", "plus_addressing", "keep_raw_attachment", "automatic_mail",
                    "accept_only_allowed", "embed_images"):
            getattr(self, key).data = getattr(mailbox, key)
        self.port.data = str(mailbox.port)
        self.acknowledgement_variant.data = mailbox.acknowledgement_variant or ""
        self.sla_policy_id.data = str(mailbox.sla_policy_id or "")
        self.max_message_size.data = megabytes(mailbox.max_message_size)
        self._offer(mailbox.protocol)
        if mailbox.protocol == "lmtp":
            pass  # pushed mail: there is no server to tell anything after processing
        elif mailbox.protocol != "pop3":  # Graph marks read or moves, as IMAP does
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
        self.automatic_mail.data, self.embed_images.data = "record", "cid"
        self.poll_interval.data, self.timeout.data, self.max_tries.data, self.cool_off.data = "60", "30", "3", "900"
        self.auth.data, self.oauth_provider.data, self.oauth_flow.data = "password", "microsoft", "delegated"

    def values(self) -> dict:
        """The settings by column name, as save_mailbox takes them."""
        out: dict = {key: (getattr(self, key).data or "").strip() for key in self.TEXT_FIELDS}
        out["shared_mailbox"] = out["shared_mailbox"] or None
        out["processed_folder"] = out["processed_folder"] or None
        out["response_address"] = out["response_address"] or None
        out["reply_to"] = out["reply_to"] or None
        out["default_type"] = out["default_type"] or None
        out["sync_start_date"] = out["sync_start_date"] or None
        for key, commas in self.LIST_FIELDS.items():
            out[key] = lines(getattr(self, key).data, commas)
        out["folders"] = list(dict.fromkeys([*(self.folder_picks.data or []), *out["folders"]]))
        for key in self.NUMBER_FIELDS:
            out[key] = number(getattr(self, key).data)
        out["port"] = number(self.port.data) if (self.port.data or "").strip() else None
        for key in ("status", "direction", "protocol", "security", "default_status", "default_priority",
                    "plus_addressing", "automatic_mail", "embed_images"):
            out[key] = getattr(self, key).data
        for key in ("verify_tls", "acknowledge", "keep_raw_attachment", "accept_only_allowed"):
            out[key] = bool(getattr(self, key).data)
        out["acknowledgement_variant"] = (self.acknowledgement_variant.data or "").strip() or None
        size = number(self.max_message_size.data)
        out["max_message_size"] = size * 2**20 if isinstance(size, int) and size else size or None
        out["after_action"] = (self.after_action_pop3 if self.protocol.data == "pop3" else self.after_action_imap).data
        if self.password.data:
            out["password"] = self.password.data
        out["auth"] = self.auth.data
        if self.protocol.data == "graph":
            # Graph is reached through its API URL: a server typed before switching does not count.
            out["host"], out["api_url"] = "", (self.api_url.data or "").strip()
        if self.protocol.data == "lmtp":
            # Pushed to the listener: no server, login or grant; fields typed before switching do not count.
            out.update(host="", username="", shared_mailbox=None, auth="password", after_action="keep")
            out.pop("password", None)
        elif self.auth.data == "oauth2":
            out["oauth"] = self.oauth_values()
        return out

    def offer_folders(self, known: list[str], *, split: bool) -> None:
        """Offer the server's folders (the last successful test's) as ticks for "folders to read"
        and suggestions for "move processed mail to". `split` (a stored mailbox shown): its
        folders the server has are ticked, the others stay typed."""
        self.folder_picks.choices = [(f, f) for f in known]
        if split and known:
            typed = lines(self.folders.data, False)
            self.folder_picks.data = [f for f in typed if f in known]
            self.folders.data = "\n".join(f for f in typed if f not in known)

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


class AlertRuleFields:
    """A route's alert rule (portal.mail.alerts), a part of the route form of its own."""

    alert_on = BooleanField("Alert rule: one ticket per open monitoring problem",
                            description="For mail from monitoring and RMM tools. A problem for a key that has an "
                            "open ticket is added to it and counted; a recovery resolves it; no acknowledgement "
                            "is ever sent. Examples: docs/alert-rules.md.")
    alert_key_from = SelectField("Read the key from", choices=[(s, s) for s in ("subject", "body", "header")],
                                 default="subject")
    alert_key_header = StringField("Key header", description="e.g. X-Alert-Key (when the key is read from a header).")
    alert_key_pattern = StringField("Key pattern", description="A regular expression; its named groups joined by / "
                                    "make the key, e.g. (?P<host>[^/]+)/(?P<check>.+?) is. A group named state "
                                    "holds the state. Empty only for a header: its whole value is the key.")
    alert_state_from = SelectField("Read the state from", choices=[
        ("key", "the state group of the key pattern"), ("subject", "subject"), ("body", "body"), ("header", "header")],
        default="key")
    alert_state_header = StringField("State header", description="e.g. X-Alert-State.")
    alert_state_pattern = StringField("State pattern", description="Optional; its group named state holds the state.")
    alert_problem_words = StringField("Words meaning a problem", description="Comma-separated, e.g. PROBLEM, DOWN.")
    alert_recovery_words = StringField("Words meaning a recovery", description="Comma-separated, e.g. RECOVERY, OK, UP.")
    alert_on_recovery = SelectField("A recovery", choices=[("resolve", "resolves the ticket"),
                                                           ("mark", "only marks it recovered")],
                                    default="resolve")
    alert_flap_changes = StringField("Flapping after more than … state changes", description="e.g. 4.")
    alert_flap_minutes = StringField("… within minutes", description="e.g. 60. A flapping key is marked, "
                                     "not reopened each time.")

    def fill_alert_rule(self, rule: dict | None) -> None:
        self.alert_on.data = rule is not None
        rule = rule or {}
        key, state = rule.get("key") or {}, rule.get("state") or {}
        self.alert_key_from.data = key.get("from", "subject")
        self.alert_key_header.data, self.alert_key_pattern.data = key.get("header", ""), key.get("pattern", "")
        self.alert_state_from.data = state.get("from", "key")
        self.alert_state_header.data, self.alert_state_pattern.data = state.get("header", ""), state.get("pattern", "")
        self.alert_problem_words.data = ", ".join(rule.get("problem") or DEFAULT_PROBLEM)
        self.alert_recovery_words.data = ", ".join(rule.get("recovery") or DEFAULT_RECOVERY)
        self.alert_on_recovery.data = rule.get("on_recovery", "resolve")
        self.alert_flap_changes.data = str(rule.get("flap_changes", DEFAULT_FLAP_CHANGES))
        self.alert_flap_minutes.data = str(rule.get("flap_minutes", DEFAULT_FLAP_MINUTES))

    def alert_rule_input(self) -> dict | None:
        """The rule as typed (the service checks it), or None when the box is not ticked."""
        if not self.alert_on.data:
            return None
        text = lambda f: (f.data or "").strip()  # noqa: E731
        return {"key": {"from": self.alert_key_from.data, "header": text(self.alert_key_header),
                        "pattern": text(self.alert_key_pattern)},
                "state": {"from": self.alert_state_from.data, "header": text(self.alert_state_header),
                          "pattern": text(self.alert_state_pattern)},
                "problem": text(self.alert_problem_words), "recovery": text(self.alert_recovery_words),
                "on_recovery": self.alert_on_recovery.data, "flap_changes": text(self.alert_flap_changes),
                "flap_minutes": text(self.alert_flap_minutes)}


class RouteForm(AlertRuleFields, _Form):
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
    acknowledgement_variant = SelectField(
        "Acknowledge with", choices=[("", "as the mailbox says")], validate_choice=False,
        description="Which of the client's acknowledgement templates this route's new tickets get.")
    default_status = SelectField("Status of new tickets", choices=[("", "as the mailbox says"), *TICKET_STATUS_CHOICES])
    default_priority = SelectField("Priority of new tickets", choices=[("", "as the mailbox says"), *PRIORITY_CHOICES])
    default_type = StringField("Type of new tickets", description="Empty: as the mailbox says.")
    extraction_rules = TextAreaField(
        "Extraction rules", description="One a line: source | target | pattern. Source: subject, body (the visible "
        "text, its first 64 KB) or header:NAME. Target: field:NAME (a custom field), type, priority, sla (an SLA "
        "policy's name) or contact (an address). The pattern is a regular expression with one named group, e.g. "
        "body | field:Asset | Asset: (?P<asset>\\S+). A value that does not fit its target is left out and said "
        "so in the email's trace.")
    sla_policy_id = SelectField("SLA policy", default="", description=SLA_POLICY_HELP)
    enabled = BooleanField("Enabled")
    test_mode = BooleanField("Test: only record what it would do",
                             description="For trying a new rule on live mail. When it matches, the email's trace "
                             "says which client and priority it would have got and the route's count goes up, but "
                             "nothing is filed by it: the next route decides, as if this one were not there. "
                             "Not for the fallback route.")

    def fill(self, route) -> None:
        self.name.data = route.name
        for key in ("recipients", "senders", "subject_keywords", "attachment_types"):
            getattr(self, key).data = "\n".join(getattr(route, key) or [])
        for key in ("fallback", "high_importance_only", "client_id", "acknowledge", "acknowledge_cc", "enabled",
                    "test_mode"):
            getattr(self, key).data = getattr(route, key)
        self.default_status.data = route.default_status or ""
        self.default_priority.data = route.default_priority or ""
        self.default_type.data = route.default_type or ""
        self.acknowledgement_variant.data = route.acknowledgement_variant or ""
        self.extraction_rules.data = rules_text(route.extraction_rules)
        self.fill_alert_rule(route.alert_rule)
        self.sla_policy_id.data = str(route.sla_policy_id or "")

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
            default_type=(self.default_type.data or "").strip() or None, test_mode=bool(self.test_mode.data),
            acknowledgement_variant=(self.acknowledgement_variant.data or "").strip() or None,
            extraction_rules=rules_of_text(self.extraction_rules.data),
            alert_rule=self.alert_rule_input())


def rules_text(rules: list[dict] | None) -> str:
    """A route's extraction rules as the form shows them: source | target | pattern, one a line."""
    return "\n".join(f"{r.get('source', '')} | {r.get('target', '')} | {r.get('pattern', '')}" for r in rules or [])


def rules_of_text(text: str | None) -> list[dict]:
    """The lines typed back into rules; a line short of its parts is checked (and named) by the service."""
    rules = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        parts += [""] * (3 - len(parts))
        rules.append({"source": parts[0], "target": parts[1], "pattern": parts[2]})
    return rules


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
    verify_tls = BooleanField(VERIFY_TLS_LABEL)

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

"""Everything a customer receives from us: which template applies, the loop limits on
automatic mail, the staging switches, and which SMTP server sends. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from portal import crypto, tenancy
from portal.extensions import db
from portal.mail.refs import RefFormat, normalize_subject
from portal.models import AutoMailLog, Client, EmailTemplate, Mailbox, Setting, SmtpServer
from portal.models.base import utcnow
from portal.transport.smtp import SmtpSettings

DEFAULT_AUTO_LIMIT_PER_HOUR = 10
# Changes the customer hears of by email (the ticket's contact), each with its own template.
CUSTOMER_NOTIFICATIONS = {"closed": "their ticket is closed", "reopened": "their ticket is reopened",
                          "owner_changed": "a technician takes their ticket",
                          "priority_changed": "the priority of their ticket changes"}
SETTING_DEFAULTS = {"block_outgoing": False, "override_recipient": None,
                    "auto_mail_limit_per_hour": DEFAULT_AUTO_LIMIT_PER_HOUR,
                    "customer_notifications": ["closed", "reopened"]}


# --- settings ----------------------------------------------------------------------------------------


def get_setting(key: str):
    row = db.session.get(Setting, key)
    return row.value if row is not None else SETTING_DEFAULTS[key]


def set_setting(key: str, value) -> None:
    if key not in SETTING_DEFAULTS:
        raise KeyError(key)
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
    db.session.flush()


# --- templates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInEffect:
    text_source: str | None
    html_source: str | None
    template: EmailTemplate | None  # None = the built-in default
    source: Client | None  # the client whose template it is


def template_in_effect(client: Client, event: str) -> TemplateInEffect:
    """The client's own template → the nearest ancestor's template shared with sub-clients →
    the built-in default."""
    chain = tenancy.lineage(client)
    rows = {t.client_id: [t] for t in db.session.scalars(
        select(EmailTemplate).where(EmailTemplate.client_id.in_([c.id for c in chain]), EmailTemplate.event == event))}
    for row, owner in tenancy.shared_down(chain, rows):
        return TemplateInEffect(row.text_source, row.html_source, row, owner)
    from portal.mail.render import load_default  # noqa: PLC0415

    text, html = load_default(event)
    return TemplateInEffect(text, html, None, None)


# --- loop limits -----------------------------------------------------------------------------------------


def subject_key(address: str, subject: str, ref_format: RefFormat | None = None) -> str:
    """The recipient's domain and the subject without our references and reply prefixes: an
    auto-responder that changes its address at every answer still lands on the same key,
    while two customers elsewhere with the same subject do not."""
    domain = address.lower().rpartition("@")[2]
    return f"{domain}|{normalize_subject(subject, ref_format)}"[:998]


def automatic_mail_hold(msp_id: int, address: str, subject: str, now: datetime | None = None,
                        ref_format: RefFormat | None = None, *, same_subject_rule: bool = True) -> str | None:
    """Why an automatic mail to `address` must be held back, or None. The same-subject rule
    ends loops with auto-responders; mail a person's action caused (a ticket closed) cannot loop."""
    now = now or utcnow()
    since = now - timedelta(hours=1)
    address = address.lower()
    limit = int(get_setting("auto_mail_limit_per_hour"))
    sent = db.session.scalar(select(func.count()).select_from(AutoMailLog).where(
        AutoMailLog.address == address, AutoMailLog.at >= since))
    if sent >= limit:
        return f"{address} already got {sent} automatic mails in the last hour (the limit is {limit})"
    if not same_subject_rule:
        return None
    key = subject_key(address, subject, ref_format)
    same = db.session.scalar(select(func.count()).select_from(AutoMailLog).where(
        AutoMailLog.msp_id == msp_id, AutoMailLog.subject_key == key, AutoMailLog.at >= since))
    if same:
        return f"an automatic mail with the same subject went out less than an hour ago ({subject!r})"
    return None


def log_automatic_mail(msp_id: int, address: str, subject: str, message_id: int | None,
                       ref_format: RefFormat | None = None) -> None:
    db.session.add(AutoMailLog(msp_id=msp_id, address=address.lower(),
                               subject_key=subject_key(address, subject, ref_format), message_id=message_id))


# --- SMTP servers ------------------------------------------------------------------------------------------


def default_gateway() -> SmtpServer | None:
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id.is_(None)))


def outgoing_server(mailbox: Mailbox | None) -> SmtpServer | None:
    """The mailbox's own outgoing server, else the installation's default gateway."""
    if mailbox is not None:
        own = db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))
        if own is not None:
            return own
    return default_gateway()


def own_server(mailbox: Mailbox) -> SmtpServer | None:
    """The mailbox's own outgoing server only (no fallback to the gateway)."""
    return db.session.scalar(select(SmtpServer).where(SmtpServer.mailbox_id == mailbox.id))


def save_smtp_server(values: dict, *, keys: str, mailbox: Mailbox | None = None) -> tuple[SmtpServer, bool]:
    """Create or update the default gateway (mailbox None) or a mailbox's outgoing server
    from plain values (host, port, security, username, password, from, timeout, verify_tls).
    Returns the server and whether anything changed."""
    from portal.services import ValidationError  # noqa: PLC0415
    from portal.services.allowlist import AllowEntryError, normalise_address  # noqa: PLC0415
    from portal.services.mailboxes import HOST_PATTERN, server_changed  # noqa: PLC0415

    errors: dict[str, list[str]] = {}
    host = str(values.get("host") or "").strip()
    if not HOST_PATTERN.match(host):
        errors["host"] = [f"{host!r} is not a host name or IP address."]
    security = values.get("security", "starttls")
    if security not in ("ssl", "starttls", "none"):
        errors["security"] = ["The security is ssl, starttls or none."]
    port = values.get("port") or {"ssl": 465, "starttls": 587, "none": 25}.get(security, 587)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        errors["port"] = ["The port is a number from 1 to 65535."]
    timeout = values.get("timeout") or 30
    if not isinstance(timeout, int) or not 1 <= timeout <= 600:
        errors["timeout"] = ["The timeout is a whole number of seconds from 1 to 600."]
    from_address = values.get("from") or values.get("from_address")
    if from_address:
        try:
            from_address = normalise_address(str(from_address))
        except AllowEntryError as exc:
            errors["from"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    query = select(SmtpServer).where(SmtpServer.mailbox_id == (mailbox.id if mailbox else None)) if mailbox else \
        select(SmtpServer).where(SmtpServer.mailbox_id.is_(None))
    server = db.session.scalar(query)
    before = None if server is None else (server.host, server.port, server.security, server.username,
                                          server.from_address, server.timeout, server.verify_tls)
    if server is None:
        server = SmtpServer(mailbox_id=mailbox.id if mailbox else None, host=host)
        db.session.add(server)
    password = values.get("password")
    if not password and server.password_encrypted is not None and server_changed(
            server, {"host": host, "port": port, "username": values.get("username") or None},
            ("host", "port", "username")):
        from portal.services.mailboxes import RETYPE_PASSWORD  # noqa: PLC0415

        raise ValidationError({"password": [RETYPE_PASSWORD]})
    server.host, server.port, server.security = host, port, security
    server.username = values.get("username") or None
    server.from_address = from_address or None
    server.timeout = timeout
    server.verify_tls = bool(values.get("verify_tls", True))
    changed = before != (server.host, server.port, server.security, server.username, server.from_address,
                         server.timeout, server.verify_tls)
    if password and (server.password_encrypted is None or crypto.decrypt(keys, server.password_encrypted) != password):
        server.password_encrypted = crypto.encrypt(keys, str(password))
        changed = True
    db.session.flush()
    return server, changed


def smtp_settings(server: SmtpServer, env) -> SmtpSettings:
    """How to reach a stored outgoing server: its password decrypted, the installation's CA file
    and address rule (env: a sending.SendEnvironment)."""
    password = crypto.decrypt(env.keys, server.password_encrypted) if server.password_encrypted else None
    return SmtpSettings(host=server.host, port=server.port, security=server.security, username=server.username,
                        password=password, timeout=server.timeout, verify_tls=server.verify_tls, ca_file=env.ca_file,
                        from_address=server.from_address, reach=env.reach)


def send_mailbox_test(mailbox: Mailbox, recipient: str, env, actor, *, send=None) -> str:
    """"Send test email" for a mailbox: a short mail, now, through the server its mail would
    use and from the address its mail would carry. Returns what happened in plain words."""
    from email.message import EmailMessage  # noqa: PLC0415
    from email.utils import formatdate, make_msgid  # noqa: PLC0415

    from portal.services.test_mail import send_test_mail  # noqa: PLC0415

    server = outgoing_server(mailbox)
    if server is None:
        return "Not sent: this mailbox has no outgoing server and there is no default gateway."
    settings = smtp_settings(server, env)

    def build(address: str) -> EmailMessage:
        email = EmailMessage()
        email["From"] = mailbox.response_address or mailbox.address
        email["To"] = address
        email["Subject"] = f"Tidemark test email for {mailbox.address}"
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = make_msgid(domain=env.host)
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(f"This is a test email from Tidemark, sent through {server.host}:{server.port} "
                          f"for the mailbox {mailbox.address}. Nothing needs to be done.\n")
        return email

    which = "its own outgoing server" if server.mailbox_id == mailbox.id else "the default gateway"
    return send_test_mail(actor, mailbox.msp_id, ("mailbox", mailbox.id), recipient, build, settings,
                          f"{server.host} ({which})", send=send)


def smtp_server_as_config(server: SmtpServer, keys: str, with_secrets: bool) -> dict:
    out = {"host": server.host, "port": server.port, "security": server.security, "username": server.username,
           "from": server.from_address, "timeout": server.timeout, "verify_tls": server.verify_tls}
    if with_secrets and server.password_encrypted:
        out["password"] = crypto.decrypt(keys, server.password_encrypted)
    return out


# --- editing templates ------------------------------------------------------------------------------------


def save_template(client: Client, event: str, text_source: str, html_source: str, shared: bool, actor) -> EmailTemplate:
    """A client's own template for an event, checked first: errors come back with their line."""
    from portal.mail.render import EVENTS, validate_template  # noqa: PLC0415
    from portal.services import ValidationError, audit  # noqa: PLC0415

    if event not in EVENTS:
        raise ValidationError({"event": [f"{event!r} is not one of {', '.join(EVENTS)}."]})
    text_source = (text_source or "").replace("\r\n", "\n") or None
    html_source = (html_source or "").replace("\r\n", "\n") or None
    problems = validate_template(text_source, html_source)
    if problems:
        errors: dict[str, list[str]] = {}
        for p in problems:
            field = "html_source" if p.part == "html" else "text_source"
            errors.setdefault(field, []).append((f"Line {p.line}: " if p.line else "") + p.message)
        raise ValidationError(errors)
    row = db.session.scalar(select(EmailTemplate).where(EmailTemplate.client_id == client.id,
                                                        EmailTemplate.event == event))
    row, changes = audit.save_changes(
        row, lambda: EmailTemplate(msp_id=client.msp_id, client_id=client.id, event=event),
        {"text": ("text_source", text_source), "html": ("html_source", html_source), "shared": ("shared", bool(shared))})
    if changes:
        audit.record(actor, client.msp_id, "client", client.id, f"template {event} saved", changes)
    return row


def delete_template(client: Client, event: str, actor) -> bool:
    from portal.services import audit  # noqa: PLC0415

    row = db.session.scalar(select(EmailTemplate).where(EmailTemplate.client_id == client.id,
                                                        EmailTemplate.event == event))
    if row is None:
        return False
    db.session.delete(row)
    audit.record(actor, client.msp_id, "client", client.id, f"template {event} removed", {})
    db.session.flush()
    return True


def may_change_installation(user, operators: list[str]) -> bool:
    """Installation-wide settings: the listed operators, or the admins of a one-MSP installation."""
    if user.email.lower() in operators:
        return True
    from portal.services.clients import msp_count  # noqa: PLC0415

    return user.is_admin and msp_count() == 1


def save_mail_settings(values: dict, *, keys: str, actor) -> None:
    """The default gateway and the switches from the settings page, audited."""
    from portal.services import ValidationError, audit  # noqa: PLC0415

    errors: dict[str, list[str]] = {}
    limit = values.get("auto_mail_limit_per_hour")
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        errors["auto_mail_limit_per_hour"] = ["The limit is a whole number from 1 to 1000."]
    override = (values.get("override_recipient") or "").strip() or None
    if override:
        from portal.services.allowlist import AllowEntryError, normalise_address  # noqa: PLC0415

        try:
            override = normalise_address(override)
        except AllowEntryError as exc:
            errors["override_recipient"] = [str(exc)]
    gateway = {k: values.get(k) for k in ("host", "port", "security", "username", "password", "from")}
    if gateway["host"]:
        try:
            save_smtp_server(gateway, keys=keys)
        except ValidationError as exc:
            errors.update(exc.errors)
    if errors:
        raise ValidationError(errors)
    before = {k: get_setting(k) for k in SETTING_DEFAULTS}
    set_setting("block_outgoing", bool(values.get("block_outgoing")))
    set_setting("override_recipient", override)
    set_setting("auto_mail_limit_per_hour", limit)
    set_setting("customer_notifications", [e for e in CUSTOMER_NOTIFICATIONS
                                           if e in (values.get("customer_notifications") or ())])
    changes = audit.diff(before, {k: get_setting(k) for k in SETTING_DEFAULTS})
    if gateway["host"]:
        changes["gateway"] = [None, f"{gateway['host']}:{gateway['port'] or ''}"]
    if changes:
        audit.record(actor, actor.msp_id, "installation", 0, "mail settings", changes)

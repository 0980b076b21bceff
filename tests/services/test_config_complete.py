"""The configuration file is complete (issue #16): everything an admin sets goes out with
`export_config` and comes back with `import_config`. Two guards keep it so: a rich configuration,
built through the services with values that are not the defaults, survives export → an empty
database → import → export unchanged, row for row; and every column of every model is either
carried by the file, a secret (exported only with secrets), or named below as not configuration."""

import pytest
from sqlalchemy import inspect, select

from portal.extensions import db as _db
from portal.inbound import retention
from portal.models import (
    AllowEntry,
    Attachment,
    AuditEntry,
    AutoMailLog,
    CannedResponse,
    Client,
    Contact,
    CustomField,
    EmailLayout,
    EmailTemplate,
    FolderState,
    GraphSubscription,
    Mailbox,
    MailboxAlert,
    MailboxOAuth,
    Message,
    MspMicrosoftApp,
    MspSetting,
    RawMessage,
    Route,
    Setting,
    SignInFailure,
    SlaPolicy,
    SmtpServer,
    TenantConsent,
    Ticket,
    TicketFieldValue,
    TicketLink,
    User,
)
from portal.outbound import servers as outbound_svc
from portal.outbound import settings as settings_svc
from portal.outbound import templates as template_svc
from portal.services import canned, commit, config_io, custom_fields, microsoft_app, sla, users
from portal.services import clients as client_svc
from portal.mail.rich import Layout
from portal.services.config_io import CANNED_KEYS, MAILBOX_KEYS, ROUTE_KEYS, TEMPLATE_KEYS
from portal.services.config_io.fileformat import CUSTOM_FIELD_KEYS, LAYOUT_KEYS, SLA_POLICY_KEYS
from portal.services.mailbox_oauth import OAUTH_KEYS, SECRET_KEYS
from portal.services.mailboxes import save_mailbox
from portal.services.routes import RouteInput
from tests.conftest import PASSWORD

APP_ID = "5f2b7c10-9d8e-4a6b-b1c2-0a9f8e7d6c5b"

# What the file carries, by model and column: the format's key tuples wherever the file uses the
# column's name, and the few it spells otherwise (the nesting of clients, the order of routes).
EXPORTED = {
    Client: {"name", "code", "waterline", "timezone", "language", "reference_prefix", "disabled",
             "retention_raw_days", "retention_unprocessed_days", "ticket_types", "customer_notifications",
             "sla_policy_id", "parent_id"},  # parent_id: an entry's place among its parent's children
    AllowEntry: {"value", "client_id"},  # a client's allow: list
    User: {"email", "name", "role", "disabled", "msp_id"},  # msp_id: the user's client
    Mailbox: {*MAILBOX_KEYS, "address", "client_id", "sla_policy_id"},
    Route: {*ROUTE_KEYS, "name", "client_id", "mailbox_id", "position", "sla_policy_id"},  # sla_policy_id: by name
    SlaPolicy: {*SLA_POLICY_KEYS, "msp_id"},  # msp_id: the top-level entry it sits on  # position: the order in the list
    MailboxOAuth: {*(k for k in OAUTH_KEYS if k not in SECRET_KEYS), "mailbox_id"},
    SmtpServer: {"host", "port", "security", "username", "from_address", "timeout", "verify_tls", "auth",
                 "mailbox_id", "msp_id"},  # a mailbox's outgoing, an MSP entry's outgoing, or neither: smtp
    MspMicrosoftApp: {"client_id", "secret_expires", "msp_id"},
    EmailTemplate: {*TEMPLATE_KEYS, "event", "variant", "client_id"},
    EmailLayout: {*LAYOUT_KEYS, "msp_id"},  # msp_id: the entry's msp
    CannedResponse: {*CANNED_KEYS, "name", "client_id"},
    Setting: {"key", "value"},  # mail_settings
    CustomField: {*CUSTOM_FIELD_KEYS, "msp_id", "position"},  # the MSP's entry; position: the order in its list
    MspSetting: {"msp_id", "key", "value"},  # an MSP entry's mail_settings
}
# Encrypted; in the file only with --with-secrets (compared below through that export).
SECRETS = {
    Mailbox: {"password_encrypted"},
    MailboxOAuth: {"client_secret_encrypted", "certificate_encrypted"},
    SmtpServer: {"password_encrypted"},
    MspMicrosoftApp: {"client_secret_encrypted", "certificate_encrypted"},
}
# Columns of configuration models that are not configuration, and why.
NOT_CONFIGURATION = {
    Client: {"id": "row id", "msp_id": "follows from the nesting",
             "name_key": "derived from the name", "last_ticket_number": "ticket numbering, runtime state",
             "created_at": "timestamp"},
    AllowEntry: {"id": "row id", "msp_id": "follows from the client", "kind": "derived from the value"},
    User: {"id": "row id", "password_hash": "people set their own passwords (invitation link); a hash is no "
           "secret to move", "timezone": "each person's own, on My settings, not the admin's",
           "session_token": "runtime state", "created_at": "timestamp", "last_sign_in_at": "runtime state"},
    Mailbox: {"id": "row id", "msp_id": "follows from the client",
              # health: what fetching and "Test connection" found
              "next_poll_at": "health", "last_poll_at": "health", "last_success_at": "health",
              "failure_count": "health", "failing_since": "health", "last_error": "health",
              "streak_alerted": "health", "last_test_at": "health", "last_test_ok": "health",
              "last_test_message": "health", "created_at": "timestamp"},
    Route: {"id": "row id", "test_hits": "runtime count: how often a route in test would have taken mail"},
    MailboxOAuth: {"id": "row id", "certificate_thumbprint": "derived from the certificate",
                   "certificate_expires": "derived from the certificate",
                   # the grant: what the provider gave, never configuration
                   "state": "grant", "state_reason": "grant", "state_changed_at": "grant", "account": "grant",
                   "refresh_token_encrypted": "grant", "access_token_encrypted": "grant",
                   "access_token_expires_at": "grant", "grant_expires_at": "grant"},
    SmtpServer: {"id": "row id", "last_test_at": "health", "last_test_ok": "health", "last_test_message": "health"},
    MspMicrosoftApp: {"id": "row id", "updated_at": "timestamp",
                      "certificate_thumbprint": "derived from the certificate",
                      "certificate_expires": "derived from the certificate"},
    EmailTemplate: {"id": "row id", "msp_id": "follows from the client", "updated_at": "timestamp"},
    EmailLayout: {"updated_at": "timestamp"},
    CannedResponse: {"id": "row id", "msp_id": "follows from the client", "updated_at": "timestamp"},
    Setting: {},
    CustomField: {"id": "row id"},
    MspSetting: {},
    SlaPolicy: {"id": "row id", "updated_at": "timestamp"},
}
# Whole models that hold work, history or runtime state rather than anything an admin sets.
NOT_CONFIGURATION_MODELS = {
    Ticket: "work", Message: "work", Attachment: "work", Contact: "learnt from mail", TicketLink: "work",
    RawMessage: "mail as fetched", AuditEntry: "history", AutoMailLog: "loop-guard log",
    FolderState: "fetch progress", MailboxAlert: "alerts sent", SignInFailure: "throttling",
    TenantConsent: "a customer's consent is given in Microsoft's page, not set by the admin",
    TicketFieldValue: "work",
    GraphSubscription: "Graph's subscriptions: made again from the mailbox and TIDEMARK_PORTAL_URL",
}


def test_every_column_is_exported_a_secret_or_named_as_not_configuration(app):
    models = {m.class_ for m in _db.Model.registry.mappers}
    unclassified = models - set(EXPORTED) - set(NOT_CONFIGURATION_MODELS)
    assert not unclassified, f"New models: export them or add them to NOT_CONFIGURATION_MODELS: {unclassified}"
    for model in EXPORTED:
        columns = {c.key for c in inspect(model).columns}
        known = EXPORTED[model] | SECRETS.get(model, set()) | set(NOT_CONFIGURATION[model])
        assert columns - known == set(), f"{model.__name__}: neither exported nor named as not configuration"
        assert known - columns == set(), f"{model.__name__}: no such column"
        assert not EXPORTED[model] & set(NOT_CONFIGURATION[model])


def keys(app):
    return app.config["TIDEMARK_ENCRYPTION_KEY"]


def build_rich_configuration(app):
    """Every section, through the services the pages use, with values that are not the defaults."""
    new = client_svc.ClientInput
    msp = client_svc.create_msp(new(name="Acme MSP", code="ACME", waterline="-- reply above --",
                                    timezone="Europe/Berlin", allow=["acme.example"], reference_prefix="ACME"))
    retention.save_retention(msp, {"retention_raw_days": 180, "retention_unprocessed_days": 60}, None)
    custom_fields.save_ticket_types(msp, ["Incident", "Request"], actor=None)
    custom_fields.save_field(msp, custom_fields.FieldInput("Site", "choice", ["Berlin", "Paris"]), actor=None)
    custom_fields.save_field(msp, custom_fields.FieldInput("Asset", "text"), actor=None)
    contoso = client_svc.create_client(msp, new(name="Contoso", code="CON", allow=["contoso.com", "boss@gmail.com"],
                                                waterline="Best regards", timezone="America/New_York",
                                                language="de"), None)
    # An alternative of the acknowledgement of the MSP's own, chosen by a route below.
    template_svc.save_template(msp, "ticket_created", "After hours: {{ ticket.subject }}\nWe are closed.", None,
                               True, None, variant="after-hours")
    client_svc.create_client(contoso, new(name="Contoso Berlin"), None)
    client_svc.set_client_disabled(client_svc.create_client(msp, new(name="Old Co"), None), True, None)
    users.create_user(msp, "ana@acme.example", PASSWORD, "admin", None, name="Ana Lopez")
    users.invite_user(msp, "tom@acme.example", "Tom", "technician", None)
    users.set_user_disabled(users.create_user(msp, "eve@acme.example", PASSWORD, "technician", None, name="Eve"),
                            True, None)
    mailbox, _ = save_mailbox(msp, msp, {
        "address": "support@acme.example", "name": "Support desk", "status": "disabled", "direction": "incoming",
        "host": "imap.acme.example", "port": 10993, "security": "starttls", "username": "support",
        "password": "support-pw", "shared_mailbox": "shared@acme.example", "verify_tls": False,
        "folders": ["INBOX", "Support"], "after_action": "move", "processed_folder": "Done",
        "aliases": ["help@acme.example"], "response_address": "desk@acme.example",
        "reply_to": "answers@acme.example", "acknowledge": False,
        "alert_recipients": ["ops@acme.example"], "default_status": "open", "default_priority": "high",
        "default_type": "Incident", "ignore_senders": ["noreply@monitor.example"], "ignore_subjects": ["[mon]"],
        "plus_addressing": "mixed", "keep_raw_attachment": True, "poll_interval": 120, "timeout": 45,
        "max_tries": 5, "cool_off": 1800, "skip_windows": ["02:00-04:00"], "sync_start_date": "2026-01-01",
        "automatic_mail": "ticket", "accept_only_allowed": True, "max_message_size": 10 * 2**20,
        "embed_images": "inline", "acknowledgement_variant": "short"}, keys=keys(app), actor=None, routes=[
        RouteInput(name="VIP", client=contoso, recipients=["vip@acme.example"], senders=["*@partner.example"],
                   subject_keywords=["urgent"], attachment_types=["pdf"], high_importance_only=True,
                   enabled=False, acknowledge=False, acknowledge_cc=True, default_status="waiting",
                   default_priority="low", default_type="Request", test_mode=True,
                   acknowledgement_variant="after-hours", extraction_rules=[
                       {"source": "header:X-Site", "pattern": r"(?P<site>\w+)", "target": "field:Site"},
                       {"source": "subject", "pattern": r"\[(?P<p>high|low)\]", "target": "priority"}],
                   alert_rule={"key": {"from": "subject", "pattern": "(?P<state>DOWN|UP): (?P<host>\\S+)"},
                               "state": {"from": "key"}, "problem": ["DOWN"], "recovery": ["UP"],
                               "on_recovery": "mark", "flap_changes": 7, "flap_minutes": 15}),
        RouteInput(name="Everything else", client=msp, fallback=True)])
    outbound_svc.save_smtp_server({"host": "smtp.acme.example", "port": 465, "security": "ssl",
                                   "username": "support", "password": "out-pw", "from": "desk@acme.example",
                                   "timeout": 20, "verify_tls": False}, keys=keys(app), mailbox=mailbox)
    save_mailbox(msp, contoso, {
        "address": "helpdesk@contoso.com", "protocol": "graph", "auth": "oauth2",
        "api_url": "http://127.0.0.1:9999/v1.0", "oauth": {
            "provider": "microsoft", "flow": "app", "tenant": "contoso.onmicrosoft.com", "client_id": APP_ID,
            "client_secret": "graph-secret", "secret_expires": "2027-03-31"}}, keys=keys(app), actor=None)
    # Mail pushed by the MSP's MTA (workers.lmtp): no server, login or after-processing action.
    save_mailbox(msp, contoso, {"address": "push@contoso.com", "protocol": "lmtp", "status": "active",
                                "aliases": ["alerts@contoso.com"], "plus_addressing": "only"},
                 keys=keys(app), actor=None)
    oauth_mailbox, _ = save_mailbox(msp, contoso, {
        "address": "mail@contoso.com", "host": "imap.contoso.com", "username": "mail", "auth": "oauth2",
        "oauth": {"provider": "generic", "client_id": "tidemark", "token_url": "https://id.contoso.com/token",
                  "authorize_url": "https://id.contoso.com/authorize", "scopes": ["imap", "offline_access"]}},
        keys=keys(app), actor=None)
    outbound_svc.save_smtp_server({"host": "smtp.contoso.com", "username": "mail@contoso.com", "auth": "oauth2"},
                                  keys=keys(app), mailbox=oauth_mailbox)
    microsoft_app.save_microsoft_app(msp, {"client_id": APP_ID, "client_secret": "app-secret",
                                           "secret_expires": "2027-06-30"}, keys=keys(app), actor=None)
    outbound_svc.save_smtp_server({"host": "relay.example.net", "port": 2525, "security": "none",
                                   "username": "relay", "password": "relay-pw", "from": "noreply@acme.example",
                                   "timeout": 15, "verify_tls": False}, keys=keys(app))
    settings_svc.save_settings({"block_outgoing": True, "override_recipient": "qa@acme.example",
                                "auto_mail_limit_per_hour": 25,
                                "customer_notifications": ["closed", "owner_changed", "sla_changed"]}, actor=None)
    template_svc.save_template(msp, "ticket_created", "Received: {{ ticket.subject }}\nWe have it.",
                               "<p>We have {{ ticket.reference }}.</p>", True, None)
    template_svc.save_template(contoso, "closed", "Closed: {{ ticket.subject }}\nDone.", "", False, None)
    template_svc.save_layout(msp, Layout(css="p { color: #123456; }", header="<p>ACME · {{ ticket.reference }}</p>",
                                         footer="<p>Acme MSP, Berlin</p>"), None)
    template_svc.save_template(contoso, "reply", None, None, False, None, subject="Re: {{ ticket.subject }}",
                               body="<p>Hello {{ contact.name }},</p><p>About {{ ticket.reference }}.</p>")
    canned.save(msp, name="Thanks", html="<p>Thanks for <b>waiting</b>.</p>", shared=True)
    canned.save(contoso, name="Password reset", text="Use the self-service page.", shared=False)
    # The MSP's own mail settings (the limit inherited) and gateway; a client's customer notifications.
    settings_svc.save_msp_settings(msp, {"block_outgoing": False, "override_recipient": "staging@acme.example",
                                         "customer_notifications": ["reopened", "priority_changed"]}, actor=None)
    outbound_svc.save_msp_gateway(msp.id, {"host": "smtp.acme-gateway.example", "port": 2587, "security": "ssl",
                                           "username": "gw", "password": "gw-pw", "from": "gw@acme.example",
                                           "timeout": 25, "verify_tls": False}, keys=keys(app), actor=None)
    settings_svc.save_client_notifications(contoso, ["owner_changed"], actor=None)
    gold = sla.save_policy(msp.id, {
        "name": "Gold", "timezone": "Europe/Berlin", "holidays": ["2026-12-25", "2027-01-01"],
        "business_hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "sat": [["09:00", "12:00"]]},
        "targets": {"high": {"response": 30, "resolution": 240}, "low": {"resolution": 2400}},
        "warning_percent": 60}, None)
    silver = sla.save_policy(msp.id, {"name": "Silver", "timezone": "America/New_York",
                                      "business_hours": {"fri": [["00:00", "24:00"]]},
                                      "targets": {"normal": {"response": 120}}, "warning_percent": 90}, None)
    sla.choose(contoso, gold, None, msp.id)
    sla.choose(mailbox, silver, None, msp.id)
    sla.choose(mailbox.routes[0], gold, None, msp.id)
    commit()


def _default(column):
    if column.default is None:
        return None
    arg = column.default.arg
    return arg(None) if callable(arg) else arg


def rows(model) -> list[dict]:
    """The model's exported columns, row by row, a reference to a client or mailbox by its name."""
    names = {**{("clients", c.id): c.name for c in _db.session.scalars(select(Client))},
             **{("sla_policies", p.id): p.name for p in _db.session.scalars(select(SlaPolicy))},
             **{("mailboxes", m.id): m.address for m in _db.session.scalars(select(Mailbox))}}
    out = []
    for row in _db.session.scalars(select(model)):
        item = {}
        for column in inspect(model).columns:
            if column.key in EXPORTED[model]:
                value = getattr(row, column.key)
                for fk in column.foreign_keys:
                    value = names.get((fk.column.table.name, value), value)
                item[column.key] = value
        out.append(item)
    return sorted(out, key=repr)


def empty_the_database():
    for table in reversed(_db.metadata.sorted_tables):
        _db.session.execute(table.delete())
    commit()


def test_a_rich_configuration_survives_export_an_empty_database_and_import(app, db):
    build_rich_configuration(app)
    before = {model: rows(model) for model in EXPORTED}
    for model, found in before.items():  # the configuration is rich enough to notice a column left behind
        for column in inspect(model).columns:
            if column.key in EXPORTED[model] and not column.foreign_keys and not column.primary_key:
                assert {repr(r[column.key]) for r in found} - {repr(_default(column))}, \
                    f"{model.__name__}.{column.key} is only ever the default here: give it a value"
    exported = config_io.export_config(keys=keys(app), with_secrets=True)
    text = config_io.dump(exported)
    assert set(exported) == set(config_io.TOP_LEVEL)

    empty_the_database()
    report: list = []
    counts = config_io.import_config(config_io.load(text, strict=True), keys=keys(app), report=report)
    commit()
    # The installation's gateway and mail settings always exist (unset: defaults), so they change.
    assert {kind for kind, _label, outcome in report if outcome == "updated"} == {"outgoing gateway",
                                                                                   "mail settings"}
    assert counts["created"] == len(report) - 2
    assert {model: rows(model) for model in EXPORTED} == before
    assert config_io.export_config(keys=keys(app), with_secrets=True) == exported
    second: list = []
    again = config_io.import_config(config_io.load(text, strict=True), keys=keys(app), report=second)
    assert (again["created"], again["updated"]) == (0, 0), [r for r in second if r[2] != "unchanged"]
    # The invited user is invited again (no password travels); the others were given none either.
    tom = db.session.scalar(select(User).where(User.email == "tom@acme.example"))
    assert users.invitation_pending(tom) and users.user_state(tom) == "invited"


def test_without_secrets_the_export_holds_none_and_imports_back_unchanged(app, db):
    build_rich_configuration(app)
    plain = config_io.dump(config_io.export_config(keys=keys(app)))
    for secret in ("support-pw", "out-pw", "graph-secret", "app-secret", "relay-pw", "gw-pw"):
        assert secret not in plain
    counts = config_io.import_config(config_io.load(plain, strict=True), keys=keys(app))
    assert (counts["created"], counts["updated"]) == (0, 0)


def test_templates_canned_responses_and_mail_settings_are_updated_in_place(app, db):
    build_rich_configuration(app)
    data = config_io.export_config(keys=keys(app))
    closed = next(t for t in data["email_templates"] if (t["client"], t["event"]) == ("Contoso", "closed"))
    closed["text_source"] = "Closed for good: {{ ticket.subject }}\nBye."
    data["canned_responses"][1]["body_html"] = "<p>New body</p>"
    data["mail_settings"]["auto_mail_limit_per_hour"] = 40
    data["email_layouts"][0]["footer"] = "<p>Acme MSP, Hamburg</p>"
    report: list = []
    counts = config_io.import_config(config_io.load(config_io.dump(data), strict=True), keys=keys(app),
                                     report=report)
    assert counts["updated"] == 4 and counts["created"] == 0
    assert {(kind, label) for kind, label, outcome in report if outcome == "updated"} == {
        ("email template", "Contoso: closed"), ("email layout", "Acme MSP"), ("canned response", "Contoso: Password reset"),
        ("mail settings", "the whole installation")}
    contoso = db.session.scalar(select(Client).where(Client.name == "Contoso"))
    assert template_svc.own_template(contoso, "closed").text_source.startswith("Closed for good")
    assert canned.get_own_by_name(contoso, "password RESET").body_html == "<p>New body</p>"
    assert settings_svc.get_setting("auto_mail_limit_per_hour") == 40
    assert template_svc.layout_of(contoso).footer == "<p>Acme MSP, Hamburg</p>"
    assert db.session.scalar(select(EmailTemplate).where(EmailTemplate.event == "ticket_created",
                                                         EmailTemplate.variant == "")).shared
    # Nothing is deleted: a file without them leaves the stored ones alone.
    config_io.import_config({"email_templates": [], "canned_responses": []}, keys=keys(app))
    assert len(config_io.export_config(keys=keys(app))["email_templates"]) == 4
    assert len(config_io.export_config(keys=keys(app))["canned_responses"]) == 2


@pytest.mark.parametrize("section, entry, message", [
    ("email_templates", {"client": "Nobody", "event": "closed", "text_source": "x\ny"},
     "email_templates[0].client: No single client is called 'Nobody'"),
    ("canned_responses", {"client": "Nobody", "name": "Hi", "body_html": "<p>Hi</p>"},
     "canned_responses[0].client: No single client is called 'Nobody'"),
    ("email_templates", {"client": "Acme MSP", "event": "birthday", "text_source": "x\ny"},
     "email_templates[0].event: 'birthday' is not one of"),
    ("email_templates", {"client": "Acme MSP", "event": "closed", "text_source": "Hi {{ ticket.subject\n"},
     "email_templates[0].text_source: Line 1"),
    ("email_templates", {"client": "Acme MSP", "event": "closed", "shared": "yes"},
     "email_templates[0].shared: This is true or false."),
    ("canned_responses", {"client": "Acme MSP", "name": "Empty", "body_html": ""},
     "canned_responses[0].body_html: Write the response."),
    ("canned_responses", {"client": "Acme MSP", "name": "Thanks", "body_html": 5},
     "canned_responses[0].body_html: This must be text."),
    ("mail_settings", {"auto_mail_limit_per_hour": 0}, "mail_settings.auto_mail_limit_per_hour: The limit is"),
    ("mail_settings", {"customer_notifications": ["closed", "birthday"]},
     "mail_settings.customer_notifications: Unknown: birthday."),
    ("mail_settings", {"block_outgoing": "no"}, "mail_settings.block_outgoing: This is true or false."),
])
def test_a_bad_entry_is_named_and_changes_nothing(app, db, section, entry, message):
    build_rich_configuration(app)
    before = config_io.export_config(keys=keys(app))
    data = {section: [entry] if section != "mail_settings" else entry}
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config(config_io.load(config_io.dump(data), strict=True), keys=keys(app))
    _db.session.rollback()
    assert message in "; ".join(f"{where}: {m}" for where, ms in refused.value.errors.items() for m in ms)
    assert config_io.export_config(keys=keys(app)) == before


def test_unknown_keys_of_the_new_sections_are_pointed_at(app, db):
    problems = config_io.unknown_fields({
        "email_templates": [{"client": "A", "event": "closed", "subjekt": "x"}],
        "canned_responses": [{"client": "A", "name": "Hi", "text": "x"}, "just text"],
        "mail_settings": {"block_outgoing": False, "limit": 3},
    })
    assert problems["email_templates[0]"][0].startswith("Unknown field: subjekt. Known: body, client, event, html_source")
    assert problems["canned_responses[0]"][0].startswith("Unknown field: text. Known: body_html, client, name")
    assert problems["canned_responses[1]"] == ["Each entry must be a mapping of keys and values."]
    assert problems["mail_settings"][0].startswith("Unknown field: limit. Known: auto_mail_limit_per_hour")
    assert config_io.unknown_fields({"mail_settings": [1]}) == {"mail_settings": [
        "This must be a mapping (block_outgoing, override_recipient, auto_mail_limit_per_hour, "
        "customer_notifications)."]}


def test_an_msp_admin_file_stays_inside_the_msp(app, db, world):
    build_rich_configuration(app)
    theirs = world.msp("Theirs MSP")
    their_contoso = world.client(theirs, "Contoso")
    template_svc.save_template(their_contoso, "closed", "Theirs\nOnly theirs.", "", False, None)
    canned.save(their_contoso, name="Password reset", text="Their own words.", shared=False)
    commit()
    acme = client_svc.get_msp_by_name("Acme MSP")
    mine = config_io.export_config(keys=keys(app), msp_id=acme.id, include_gateway=False)
    assert "smtp" not in mine and "mail_settings" not in mine
    assert "Their own words" not in config_io.dump(mine) and "Only theirs" not in config_io.dump(mine)
    assert [(t["client"], t["event"], t.get("variant")) for t in mine["email_templates"]] == [
        ("Acme MSP", "ticket_created", None), ("Acme MSP", "ticket_created", "after-hours"),
        ("Contoso", "closed", None), ("Contoso", "reply", None)]
    assert [layout["msp"] for layout in mine["email_layouts"]] == ["Acme MSP"]
    # The same client name in both MSPs: the admin's file changes their own Contoso only.
    mine["email_templates"][2]["text_source"] = "Mine\nChanged."
    mine["canned_responses"][0]["body_html"] = "<p>Mine, changed.</p>"
    counts = config_io.import_config(mine, keys=keys(app), msp=acme, gateway_allowed=False)
    assert counts["updated"] == 2
    assert template_svc.own_template(their_contoso, "closed").text_source == "Theirs\nOnly theirs."
    assert "Their own words" in canned.get_own_by_name(their_contoso, "Password reset").body_html
    for section, entry in (("email_templates", {"client": "Theirs MSP", "event": "closed", "text_source": "x\ny"}),
                           ("canned_responses", {"client": "Theirs MSP", "name": "X", "body_html": "<p>x</p>"})):
        with pytest.raises(config_io.ConfigError) as refused:
            config_io.import_config({section: [entry]}, keys=keys(app), msp=acme, gateway_allowed=False)
        assert refused.value.errors == {f"{section}[0].client": ["No single client is called 'Theirs MSP' in Acme MSP."]}
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config({"mail_settings": {"block_outgoing": False}}, keys=keys(app), msp=acme,
                                gateway_allowed=False)
    assert "only an operator can set them" in refused.value.errors["mail_settings"][0]
    assert settings_svc.get_setting("block_outgoing") is True
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config({"email_layouts": [{"msp": "Theirs MSP", "footer": "<p>mine now</p>"}]},
                                keys=keys(app), msp=acme, gateway_allowed=False)
    assert refused.value.errors == {"email_layouts[0].msp": ["This file is Acme MSP's; 'Theirs MSP' is not."]}
    assert _db.session.get(EmailLayout, theirs.id) is None


def test_a_user_disabled_in_the_file_is_disabled_with_the_users_page_rules(app, db):
    build_rich_configuration(app)
    data = {"users": [{"email": "tom@acme.example", "client": "Acme MSP", "disabled": True},
                      {"email": "eve@acme.example", "client": "Acme MSP", "disabled": False}]}
    counts = config_io.import_config(data, keys=keys(app))
    assert counts["updated"] == 2
    assert users.user_state(db.session.scalar(select(User).where(User.email == "tom@acme.example"))) == "disabled"
    assert not db.session.scalar(select(User).where(User.email == "eve@acme.example")).disabled
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config({"users": [{"email": "ana@acme.example", "client": "Acme MSP", "disabled": True}]},
                                keys=keys(app))
    assert "last active admin" in refused.value.errors["users[0]"][0]


def test_the_mail_settings_are_exported_as_saved(app, db):
    build_rich_configuration(app)
    data = config_io.load(config_io.dump(config_io.export_config(keys=keys(app))), strict=True)
    assert data["mail_settings"] == {"block_outgoing": True, "override_recipient": "qa@acme.example",
                                     "auto_mail_limit_per_hour": 25,
                                     "customer_notifications": ["closed", "owner_changed", "sla_changed"]}


def test_raw_sources_in_the_file_replace_a_stored_rich_template(app, db):
    """A hand-written entry with only text_source must not be swallowed by the body kept from before."""
    build_rich_configuration(app)
    config_io.import_config({"email_templates": [{"client": "Contoso", "event": "reply",
                                                  "text_source": "Re: {{ ticket.subject }}\nPlain again."}]},
                            keys=keys(app))
    contoso = db.session.scalar(select(Client).where(Client.name == "Contoso"))
    row = template_svc.own_template(contoso, "reply")
    assert (row.body, row.subject) == (None, None) and row.text_source.endswith("Plain again.")

"""The configuration file's format: its sections and their keys, reading it (with its limits)
and writing it. What each key means is the services' business (portal.services.config_io.run)."""

from __future__ import annotations

from typing import Any

import yaml
from flask import current_app

from portal.inbound.retention import RETENTION_KEYS
from portal.outbound.settings import SETTING_DEFAULTS
from portal.services import ValidationError
from portal.services import mailbox_oauth, microsoft_app, routes

MAILBOX_KEYS = (
    "name", "status", "direction", "protocol", "auth", "host", "port", "security", "username", "shared_mailbox",
    "verify_tls", "folders", "after_action", "processed_folder", "aliases", "response_address", "reply_to",
    "acknowledge", "alert_recipients", "default_status", "default_priority", "default_type", "ignore_senders", "ignore_subjects",
    "plus_addressing", "keep_raw_attachment", "poll_interval", "timeout", "max_tries", "cool_off", "skip_windows",
    "sync_start_date", "api_url", "automatic_mail", "accept_only_allowed", "max_message_size", "embed_images",
    "acknowledgement_variant",
)
# Graph is reached through api_url: a mail server's host, port and security mean nothing there.
GRAPH_LEAVES_OUT = {"host", "port", "security"}
ROUTE_KEYS = routes.ROUTE_FIELDS  # a route's keys are what its page edits


# Every key the file may use, per kind of entry: anything else is a typo to point at.
# An MSP's retention days (portal.inbound.retention.RETENTION_KEYS) are read on the top-level entry only.
# An MSP's custom ticket fields and ticket-type allow-list are read on the top-level entry only, too.
CUSTOM_FIELD_KEYS = ("name", "kind", "choices")
# An MSP's SLA policies sit on its top-level entry (`sla_policies`); a client, mailbox or route
# names the one it chose (`sla_policy`).
SLA_POLICY_KEYS = ("name", "timezone", "business_hours", "holidays", "targets", "warning_percent")
SLA_POLICY_FIELDS = set(SLA_POLICY_KEYS)
CLIENT_FIELDS = {"name", "code", "waterline", "timezone", "language", "allow", "reference_prefix", "disabled",
                 "children", "custom_fields", "ticket_types", "sla_policy", "sla_policies", *RETENTION_KEYS}
# An MSP's own mail settings and gateway (on the top-level entry only); any client's customer notifications.
CLIENT_FIELDS |= {"mail_settings", "outgoing", "customer_notifications"}
USER_FIELDS = {"email", "name", "role", "client", "password", "disabled"}
MAILBOX_FIELDS = {"address", "client", "password", "routes", "outgoing", "oauth", "sla_policy", *MAILBOX_KEYS}
OAUTH_FIELDS = set(mailbox_oauth.OAUTH_KEYS)
ROUTE_FIELDS = {"name", "client", "sla_policy", *ROUTE_KEYS}
SMTP_FIELDS = {"host", "port", "security", "username", "password", "from", "from_address", "timeout", "verify_tls",
               "auth"}
# `msp` names the MSP whose app it is, where the file holds several (the command line's export).
MICROSOFT_APP_FIELDS = {"msp", *microsoft_app.APP_KEYS}
# A template is the client's own text for one event; its sources keep their column's name, so that a
# new column of email_templates is one more key here (the export and import follow this tuple).
TEMPLATE_KEYS = ("text_source", "html_source", "subject", "body", "shared")
# `variant` names an alternative of the event's template (left out: the standard one).
TEMPLATE_FIELDS = {"client", "event", "variant", *TEMPLATE_KEYS}
# An MSP's frame for rich-text templates; `msp` names whose, as for microsoft_app.
LAYOUT_KEYS = ("css", "header", "footer")
LAYOUT_FIELDS = {"msp", *LAYOUT_KEYS}
CANNED_KEYS = ("body_html", "shared")
CANNED_FIELDS = {"client", "name", *CANNED_KEYS}
# Installation-wide, like the default gateway (smtp): only an operator sets them.
MAIL_SETTINGS_FIELDS = set(SETTING_DEFAULTS)
TOP_LEVEL = ("clients", "users", "mailboxes", "smtp", "microsoft_app", "email_layouts", "email_templates",
             "canned_responses", "mail_settings")


# In the portal, an address that has an account in another MSP must be answered like any other:
# people set their own passwords through their invitation link, and an address has one account.
INVITED_NOT_PASSWORD = ("New and invited users are not given a password here: leave it out, then send each "
                        "the invitation link from the Users page.")


class ConfigError(ValidationError):
    pass


def fail(where: str, exc: ValidationError) -> ConfigError:
    return ConfigError({where + (f".{k}" if k else ""): v for k, v in exc.errors.items()})


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"The file is not valid YAML: {exc}"
    what = getattr(exc, "problem", None) or "cannot read this"
    return f"The file is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {what}."


MAX_DEPTH = 40


def _limits() -> tuple[int, int]:
    """(bytes, values) a file may hold: TIDEMARK_CONFIG_MAX_BYTES and TIDEMARK_CONFIG_MAX_ENTRIES."""
    return current_app.config["TIDEMARK_CONFIG_MAX_BYTES"], current_app.config["TIDEMARK_CONFIG_MAX_ENTRIES"]


def size_problem(size: int) -> str | None:
    """What is wrong with a file of this many bytes, or None."""
    max_bytes = _limits()[0]
    if size <= max_bytes:
        return None
    limit = f"{max_bytes // 1_000_000} MB" if max_bytes >= 1_000_000 else f"{max(1, max_bytes // 1000)} KB"
    return f"The file is larger than {limit}; a configuration is much smaller."


# libyaml when it is there: the pure-Python parser needs seconds for a file of a megabyte.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_shape(text: str) -> None:
    """Refuse anchors and aliases, too many values and too deep a nesting before anything is
    built: a few hundred bytes of nested aliases stand for millions of entries, each imported."""
    max_values = _limits()[1]
    values = depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        problem = None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            problem = ("the file uses YAML anchors and aliases (& and *), which the import does not accept. "
                       "Write each entry out in full.")
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            values += 1
            if values > max_values:
                problem = f"the file holds more than {max_values} entries and values. Split it into smaller files."
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    problem = f"the file is nested too deeply (more than {MAX_DEPTH} levels)."
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if problem:
            mark = event.start_mark
            raise ConfigError({"": [f"Line {mark.line + 1}, column {mark.column + 1}: {problem}"]})


def load(text: str, *, strict: bool = False) -> dict:
    """The parsed file. `strict` also refuses keys the import does not know (typos would
    otherwise be ignored without a word). Too big a file, anchors and aliases, too many values
    and too deep a nesting are refused before anything is built."""
    if problem := size_problem(len(text.encode("utf-8", "surrogatepass"))):
        raise ConfigError({"": [problem]})
    try:
        _check_shape(text)
        data = yaml.load(text, Loader=_SafeLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError({"": [_yaml_problem(exc)]}) from None
    if not isinstance(data, dict):
        raise ConfigError({"": ["The file must be a mapping with clients, users and mailboxes."]})
    unknown = set(data) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError({"": [f"Unknown top-level keys: {', '.join(sorted(map(str, unknown)))}."]})
    if strict and (problems := unknown_fields(data)):
        raise ConfigError(problems)
    return data


def unknown_fields(data: dict) -> dict[str, list[str]]:
    """Where the file has the wrong shape or a key that nothing reads: path -> messages."""
    problems: dict[str, list[str]] = {}

    def entries(value: Any, where: str, fields: set[str]) -> list[tuple[str, dict]]:
        if value is None:
            return []
        if not isinstance(value, list):
            problems[where] = ["This must be a list (entries starting with -)."]
            return []
        found = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(item, dict):
                problems[at] = ["Each entry must be a mapping of keys and values."]
                continue
            check(item, at, fields)
            found.append((at, item))
        return found

    def check(item: dict, where: str, fields: set[str]) -> None:
        extra = sorted(str(k) for k in item if k not in fields)
        if extra:
            problems[where] = [f"Unknown field{'s' if len(extra) > 1 else ''}: {', '.join(extra)}. "
                               f"Known: {', '.join(sorted(fields))}."]

    def clients(value: Any, where: str) -> None:
        for at, item in entries(value, where, CLIENT_FIELDS):
            entries(item.get("custom_fields"), at + ".custom_fields", set(CUSTOM_FIELD_KEYS))
            for key, fields in (("mail_settings", MAIL_SETTINGS_FIELDS), ("outgoing", SMTP_FIELDS)):
                if isinstance(item.get(key), dict):
                    check(item[key], f"{at}.{key}", fields)
            clients(item.get("children"), at + ".children")
            entries(item.get("sla_policies"), at + ".sla_policies", SLA_POLICY_FIELDS)

    clients(data.get("clients"), "clients")
    entries(data.get("users"), "users", USER_FIELDS)
    for at, item in entries(data.get("mailboxes"), "mailboxes", MAILBOX_FIELDS):
        entries(item.get("routes"), at + ".routes", ROUTE_FIELDS)
        if isinstance(item.get("outgoing"), dict):
            check(item["outgoing"], at + ".outgoing", SMTP_FIELDS)
        if isinstance(item.get("oauth"), dict):
            check(item["oauth"], at + ".oauth", OAUTH_FIELDS)
    for key, fields, hint in (("smtp", SMTP_FIELDS, "host, port, security, ..."),
                              ("mail_settings", MAIL_SETTINGS_FIELDS, ", ".join(SETTING_DEFAULTS))):
        if isinstance(data.get(key), dict):
            check(data[key], key, fields)
        elif data.get(key) is not None:
            problems[key] = [f"This must be a mapping ({hint})."]
    entries(data.get("email_layouts"), "email_layouts", LAYOUT_FIELDS)
    entries(data.get("email_templates"), "email_templates", TEMPLATE_FIELDS)
    entries(data.get("canned_responses"), "canned_responses", CANNED_FIELDS)
    apps = data.get("microsoft_app")
    for at, item in ([("microsoft_app", apps)] if isinstance(apps, dict) else
                     [(f"microsoft_app[{i}]", a) for i, a in enumerate(apps)] if isinstance(apps, list) else []):
        if isinstance(item, dict):
            check(item, at, MICROSOFT_APP_FIELDS)
        else:
            problems[at] = ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]
    if apps is not None and not isinstance(apps, (dict, list)):
        problems["microsoft_app"] = ["This must be a mapping (client_id, client_secret, secret_expires, certificate)."]
    return problems



def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

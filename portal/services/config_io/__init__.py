"""Configuration as code: the YAML file of `flask config import/export` and of the portal's
configuration page. It holds everything an admin sets: clients (tree, codes, allow-lists,
waterlines, time zones, reference prefix, disabled, customer notifications; an MSP's own mail
settings and gateway), users, mailboxes with their routes, OAuth2
apps and outgoing servers, the MSP's Microsoft 365 app, email templates, canned responses, and for
an operator the default gateway (smtp) and the mail settings. Import is idempotent: a second run
of the same file changes nothing.

fileformat: the sections, their keys, reading and writing the file. run: applying the tree,
users, mailboxes, apps and gateway. messages: templates, canned responses, mail settings.
export: writing it all back."""

from __future__ import annotations

from portal.extensions import db
from portal.models import Client, User
from portal.services.config_io.export import export_config
from portal.services.config_io.fileformat import (
    CANNED_KEYS,
    MAILBOX_KEYS,
    ROUTE_KEYS,
    TEMPLATE_KEYS,
    TOP_LEVEL,
    ConfigError,
    dump,
    load,
    size_problem,
    unknown_fields,
)
from portal.services.config_io.messages import import_canned, import_layouts, import_mail_settings, import_templates
from portal.services.config_io.run import Import

__all__ = ["CANNED_KEYS", "MAILBOX_KEYS", "ROUTE_KEYS", "TEMPLATE_KEYS", "TOP_LEVEL", "ConfigError", "dump",
           "export_config", "import_config", "load", "preview_import", "size_problem", "unknown_fields"]


def import_config(data: dict, *, keys: str, actor: User | None = None, msp: Client | None = None,
                  gateway_allowed: bool = True, report: list[tuple[str, str, str]] | None = None) -> dict[str, int]:
    """Apply the configuration. Returns counts of created, updated and unchanged records.
    With `msp` (the portal's page) everything must sit in that MSP's tree; `gateway_allowed`
    False refuses the installation-wide sections (smtp, mail_settings); `report` collects
    (kind, name, outcome)."""
    run = Import(keys=keys, actor=actor, scope=msp, report=report)
    run.clients(data.get("clients") or [], None, None, "clients")
    run.users(data.get("users") or [])
    # Before the mailboxes: a mailbox or route may choose an alternative of the acknowledgement.
    import_layouts(run, data.get("email_layouts") or [])  # before the templates checked against them
    import_templates(run, data.get("email_templates") or [])
    if data.get("microsoft_app"):  # before the mailboxes: app-only ones may use it
        run.microsoft_apps(data["microsoft_app"])
    run.mailboxes(data.get("mailboxes") or [])
    if data.get("smtp"):
        run.gateway(data["smtp"], gateway_allowed)
    import_canned(run, data.get("canned_responses") or [])
    if data.get("mail_settings") is not None:
        import_mail_settings(run, data["mail_settings"], gateway_allowed)
    db.session.flush()
    return run.counts


def preview_import(data: dict, *, keys: str, actor: User | None = None, msp: Client | None = None,
                   gateway_allowed: bool = True) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """A dry run: the import inside a savepoint that is always rolled back. Returns the counts
    and what would happen to each entry; errors are raised exactly as the real import would."""
    report: list[tuple[str, str, str]] = []
    savepoint = db.session.begin_nested()
    try:
        counts = import_config(data, keys=keys, actor=actor, msp=msp, gateway_allowed=gateway_allowed,
                               report=report)
    finally:
        savepoint.rollback()
    return counts, report

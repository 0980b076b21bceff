"""The sections about what Tidemark writes: email templates and canned responses (per client, as
their pages edit them) and the installation's mail settings (as the mail settings page edits them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from portal.extensions import db
from portal.mail.rich import Layout
from portal.models import CannedResponse, Client, EmailLayout, EmailTemplate
from portal.outbound import settings as settings_svc
from portal.outbound import templates as template_svc
from portal.services import ValidationError, canned
from portal.services.config_io.fileformat import CANNED_KEYS, LAYOUT_KEYS, TEMPLATE_KEYS, ConfigError, fail
from portal.services.config_io.run import Import

ENTRY_NOT_MAPPING = "Each entry must be a mapping of keys and values."


def _entries(items: Any, section: str):
    """(where, entry) for each entry of a list section."""
    if not isinstance(items, list):
        raise ConfigError({section: ["This must be a list (entries starting with -)."]})
    for i, item in enumerate(items):
        where = f"{section}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError({where: [ENTRY_NOT_MAPPING]})
        yield where, item


def _given(item: dict, keys: tuple[str, ...], before: dict | None, where: str) -> dict:
    """The entry's values over the stored ones (a key left out keeps its value): `shared` is yes
    or no, every other key text."""
    fresh = {k: k == "shared" or None for k in keys}  # a new entry: shared, the rest empty
    values = {**(before or fresh), **{k: item[k] for k in keys if k in item}}
    for key, value in values.items():
        if key == "shared" and not isinstance(value, bool):
            raise ConfigError({f"{where}.{key}": ["This is true or false."]})
        if key != "shared" and value is not None and not isinstance(value, str):
            raise ConfigError({f"{where}.{key}": ["This must be text."]})
    return values


def _snapshot(row: Any, keys: tuple[str, ...]) -> dict | None:
    return None if row is None else {k: getattr(row, k) for k in keys}


def import_layouts(run: Import, items: Any) -> None:
    """`email_layouts`: each MSP's frame for rich-text templates (CSS, header, footer)."""
    for where, item in _entries(items, "email_layouts"):
        msp = run.msp_owner(item.get("msp"), where, "email layout")
        before = _snapshot(db.session.get(EmailLayout, msp.id), LAYOUT_KEYS)
        values = {**(before or dict.fromkeys(LAYOUT_KEYS, "")), **{k: item[k] for k in LAYOUT_KEYS if k in item}}
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError({f"{where}.{key}": ["This must be text."]})
        try:
            row = template_svc.save_layout(msp, Layout(**values), run.actor)
        except ValidationError as exc:
            raise fail(where, exc) from None
        run.note(before is None, _snapshot(row, LAYOUT_KEYS) != before, "email layout", msp.name)


def import_templates(run: Import, items: Any) -> None:
    """`email_templates`: each client's own template for one event, checked as its page checks it."""
    for where, item in _entries(items, "email_templates"):
        client = run.client_named(item.get("client"), where + ".client")
        event = str(item.get("event") or "")
        variant = str(item.get("variant") or "")
        before = _snapshot(template_svc.own_template(client, event, variant), TEMPLATE_KEYS)
        values = _given(item, TEMPLATE_KEYS, before, where)
        if "body" not in item and ("text_source" in item or "html_source" in item):
            values.update(subject=None, body=None)  # raw sources given: a raw template, not the stored rich one
        try:
            row = template_svc.save_template(client, event, **values, actor=run.actor, variant=variant)
        except ValidationError as exc:
            raise fail(where, exc) from None
        run.note(before is None, _snapshot(row, TEMPLATE_KEYS) != before, "email template",
                 f"{client.name}: {event}" + (f" ({row.variant})" if row.variant else ""))


def import_canned(run: Import, items: Any) -> None:
    """`canned_responses`: each client's own responses, by name (in any case)."""
    for where, item in _entries(items, "canned_responses"):
        client = run.client_named(item.get("client"), where + ".client")
        name = str(item.get("name") or "")
        existing = canned.get_own_by_name(client, name) if name.strip() else None
        before = _snapshot(existing, ("name", *CANNED_KEYS))
        values = _given(item, CANNED_KEYS, before and {k: before[k] for k in CANNED_KEYS}, where)
        try:
            row = canned.save(client, name=name, html=values["body_html"] or "", shared=values["shared"],
                              actor=run.actor, response=existing)
        except ValidationError as exc:
            # The page's form writes the body in a field called text; the file calls it body_html.
            errors = {"body_html" if k == "text" else k: v for k, v in exc.errors.items()}
            raise fail(where, ValidationError(errors)) from None
        run.note(existing is None, _snapshot(row, ("name", *CANNED_KEYS)) != before, "canned response",
                 f"{client.name}: {row.name}")


def import_mail_settings(run: Import, value: Any, gateway_allowed: bool) -> None:
    """`mail_settings`: the installation's switches; what the file leaves out keeps its value."""
    if not gateway_allowed:
        raise ConfigError({"mail_settings": ["The mail settings serve the whole installation: only an operator "
                                             "can set them. Remove the mail_settings section."]})
    if not isinstance(value, dict):
        raise ConfigError({"mail_settings": ["This must be a mapping (" + ", ".join(settings_svc.SETTING_DEFAULTS)
                                             + ")."]})
    if "block_outgoing" in value and not isinstance(value["block_outgoing"], bool):
        raise ConfigError({"mail_settings.block_outgoing": ["This is true or false."]})
    try:
        changes = settings_svc.save_settings(dict(value), actor=run.actor)
    except ValidationError as exc:
        raise fail("mail_settings", exc) from None
    run.note(False, bool(changes), "mail settings", "the whole installation")


# --- export ---------------------------------------------------------------------------------------------


def _rows(model, msp_id: int | None) -> list:
    query = select(model, Client.name).join(Client, Client.id == model.client_id)
    if msp_id is not None:
        query = query.where(model.msp_id == msp_id)
    return list(db.session.execute(query))


def export_templates(msp_id: int | None) -> list[dict]:
    rows = sorted(_rows(EmailTemplate, msp_id), key=lambda r: (r[1], r[0].event, r[0].variant))
    return [{"client": name, "event": row.event, **({"variant": row.variant} if row.variant else {}),
             **_snapshot(row, TEMPLATE_KEYS)} for row, name in rows]


def export_layouts(msp_id: int | None) -> list[dict]:
    query = select(EmailLayout, Client.name).join(Client, Client.id == EmailLayout.msp_id).order_by(Client.name)
    if msp_id is not None:
        query = query.where(EmailLayout.msp_id == msp_id)
    return [{"msp": name, **_snapshot(row, LAYOUT_KEYS)} for row, name in db.session.execute(query)]


def export_canned(msp_id: int | None) -> list[dict]:
    rows = sorted(_rows(CannedResponse, msp_id), key=lambda r: (r[1], r[0].name.casefold()))
    return [{"client": name, "name": row.name, **_snapshot(row, CANNED_KEYS)} for row, name in rows]


def export_mail_settings() -> dict:
    return {k: settings_svc.get_setting(k) for k in settings_svc.SETTING_DEFAULTS}

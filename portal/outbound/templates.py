"""Email templates: which one applies to a client's mail (its own, else the nearest ancestor's
shared with sub-clients, the MSP's always, else the built-in default), editing a client's own, and sending one as
a test. Flush, never commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.mail.compose import AUTOMATIC_BY_EVENT, compose
from portal.mail.render import EVENTS, TemplateError, load_default, render, sample_context, validate_template
from portal.models import Client, EmailTemplate, User
from portal.models.base import utcnow
from portal.outbound.servers import SendEnvironment, outgoing_settings
from portal.outbound.test_mail import send_test_mail
from portal.services import ValidationError, audit
from portal.transport.smtp import send as smtp_send


@dataclass(frozen=True)
class TemplateInEffect:
    text_source: str | None
    html_source: str | None
    template: EmailTemplate | None  # None = the built-in default
    source: Client | None  # the client whose template it is


def template_in_effect(client: Client, event: str) -> TemplateInEffect:
    """The client's own template → the nearest ancestor's template shared with sub-clients →
    the MSP's own → the built-in default. The MSP's template applies to every client without one
    of its own whatever its `shared` flag says: that is what people expect of a template set on
    the MSP (rows saved unshared before this rule apply too; no client of the MSP had them)."""
    chain = tenancy.lineage(client)
    rows = {t.client_id: t for t in db.session.scalars(
        select(EmailTemplate).where(EmailTemplate.client_id.in_([c.id for c in chain]), EmailTemplate.event == event))}
    for depth, owner in enumerate(chain):
        row = rows.get(owner.id)
        if row is not None and (depth == 0 or row.shared or owner.is_msp):
            return TemplateInEffect(row.text_source, row.html_source, row, owner)
    text, html = load_default(event)
    return TemplateInEffect(text, html, None, None)


def preview_context(client: Client) -> dict:
    """The sample ticket as the edited client's mail would show it: signed with its MSP's name
    (and the client's own name), not the sample's."""
    msp = client if client.is_msp else db.session.get(Client, client.msp_id)
    context = sample_context()
    context["msp"] = {**context["msp"], "name": msp.name}
    context["message"] = {**context["message"], "signature": f"Sam Patel\n{msp.name}"}
    if not client.is_msp:
        context["client"] = {**context["client"], "name": client.name}
    return context


# --- editing ---------------------------------------------------------------------------------------------


def save_template(client: Client, event: str, text_source: str, html_source: str, shared: bool, actor) -> EmailTemplate:
    """A client's own template for an event, checked first: errors come back with their line."""
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
        {"text": ("text_source", text_source), "html": ("html_source", html_source),
         "shared": ("shared", bool(shared) or client.is_msp)})
    if changes:
        audit.record(actor, client.msp_id, "client", client.id, f"template {event} saved", changes)
    return row


def delete_template(client: Client, event: str, actor) -> bool:
    row = db.session.scalar(select(EmailTemplate).where(EmailTemplate.client_id == client.id,
                                                        EmailTemplate.event == event))
    if row is None:
        return False
    db.session.delete(row)
    audit.record(actor, client.msp_id, "client", client.id, f"template {event} removed", {})
    db.session.flush()
    return True


def send_test_email(client: Client, event: str, text_source: str | None, html_source: str | None, recipient: str,
                    env: SendEnvironment, actor: User, *, send: Callable = smtp_send) -> str:
    """Render a template for the sample ticket and send it now through the default gateway
    (limited, staging switches honoured, audited: `test_mail`). Returns what happened in plain
    words; nothing is recorded on any ticket."""
    msp = db.session.get(Client, client.msp_id or client.id)
    try:
        rendered = render((text_source, html_source), preview_context(client))
    except TemplateError as exc:
        return f"Not sent: the template has an error: {exc}"
    server = outgoing_settings(None, env)
    if server is None or not server.from_address:
        return "Not sent: set the default outgoing gateway and its from address first (smtp: in the configuration)."

    def build(address: str):
        return compose(rendered, from_address=server.from_address, from_name=msp.name, to=[address], host=env.host,
                       automatic=AUTOMATIC_BY_EVENT.get(event), date=utcnow())

    return send_test_mail(actor, client.msp_id, ("client", client.id), recipient, build, server, server.host,
                          send=send)

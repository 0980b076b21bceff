"""Email templates: which one applies to a client's mail (its own, else the nearest ancestor's
shared with sub-clients, the MSP's always, else the built-in default in the client's language),
the named alternatives of the acknowledgement a mailbox or route may choose, editing a client's
own, and sending one as a test. Flush, never commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from portal import tenancy
from portal.extensions import db
from portal.mail.compose import AUTOMATIC_BY_EVENT, compose
from portal.mail.language import LANGUAGES
from portal.mail.render import (BUILTIN_VARIANTS, EVENTS, RenderedEmail, TemplateError, TemplateProblem, load_default,
                                sample_context)
from portal.mail.rich import (Layout, TemplateTexts, clean_body, default_layout, render_texts, validate_layout,
                              validate_texts)
from portal.models import Client, EmailLayout, EmailTemplate, User
from portal.models.base import utcnow
from portal.outbound.servers import SendEnvironment, outgoing_settings
from portal.outbound.test_mail import send_test_mail
from portal.outbound.variants import VARIANT_EVENT, VARIANT_NAME, variant_label
from portal.services import ValidationError, audit
from portal.transport.smtp import send as smtp_send


@dataclass(frozen=True)
class TemplateInEffect:
    text_source: str | None
    html_source: str | None
    template: EmailTemplate | None  # None = the built-in default
    source: Client | None  # the client whose template it is
    subject: str | None = None  # a rich-text template: its subject and body (then no raw sources)
    body: str | None = None
    layout: Layout | None = None  # the MSP's layout, for a rich-text template
    variant: str = ""  # the alternative this is ("" the standard template)

    @property
    def texts(self) -> TemplateTexts:
        return TemplateTexts(self.text_source, self.html_source, self.subject, self.body)


def template_in_effect(client: Client, event: str, variant: str = "") -> TemplateInEffect:
    """The client's own template → the nearest ancestor's template shared with sub-clients →
    the MSP's own → the built-in default, in the client's language. The MSP's template applies to
    every client without one of its own whatever its `shared` flag says: that is what people
    expect of a template set on the MSP (rows saved unshared before this rule apply too; no
    client of the MSP had them). An alternative (`variant`) is found the same way among the
    alternatives of that name, then the built-in one of that name; a name none of them has (an
    alternative removed since it was chosen) gets the standard template."""
    chain = tenancy.lineage(client)
    rows = {t.client_id: t for t in db.session.scalars(
        select(EmailTemplate).where(EmailTemplate.client_id.in_([c.id for c in chain]), EmailTemplate.event == event,
                                    EmailTemplate.variant == variant))}
    for depth, owner in enumerate(chain):
        row = rows.get(owner.id)
        if row is not None and (depth == 0 or row.shared or owner.is_msp):
            layout = layout_of(client) if row.body is not None else None
            return TemplateInEffect(row.text_source, row.html_source, row, owner, row.subject, row.body, layout,
                                    variant)
    if variant and variant not in BUILTIN_VARIANTS.get(event, ()):
        return template_in_effect(client, event)
    text, html = load_default(event, tenancy.language_of(client), variant)
    return TemplateInEffect(text, html, None, None, variant=variant)


def acknowledgement_in_effect(client: Client, variant: str | None) -> str:
    """Which template a new ticket of the client would be acknowledged with, in plain words (the
    routing check shows it): the alternative chosen and whose text it is."""
    found = template_in_effect(client, VARIANT_EVENT, variant or "")
    if found.source is None:
        whose = f"built-in, in {LANGUAGES[tenancy.language_of(client)]}"
    else:
        whose = "its own" if found.source.id == client.id else f"shared by {found.source.name}"
    return f"{variant_label(found.variant)} ({whose})"


def msp_of(client: Client) -> Client:
    return client if client.is_msp else db.session.get(Client, client.msp_id)


def layout_of(client: Client) -> Layout:
    """The layout of the client's MSP for rich-text mail, or the built-in one."""
    row = db.session.get(EmailLayout, client.msp_id or client.id)
    return Layout(row.css, row.header, row.footer) if row is not None else default_layout()


def preview_context(client: Client) -> dict:
    """The sample ticket as the edited client's mail would show it: signed with its MSP's name
    (and the client's own name), not the sample's."""
    msp = msp_of(client)
    context = sample_context()
    context["msp"] = {**context["msp"], "name": msp.name}
    context["message"] = {**context["message"], "signature": f"Sam Patel\n{msp.name}"}
    if not client.is_msp:
        context["client"] = {**context["client"], "name": client.name}
    return context


def render_preview(client: Client, texts: TemplateTexts, layout: Layout | None = None) -> RenderedEmail:
    """A template rendered for the sample ticket as the client's mail: its names, its MSP's layout
    (unless another is given), its time zone. Raises TemplateError."""
    return render_texts(texts, layout or layout_of(client), preview_context(client), tz=tenancy.timezone_of(client),
                        language=tenancy.language_of(client))


# --- editing ---------------------------------------------------------------------------------------------


def own_template(client: Client, event: str, variant: str = "") -> EmailTemplate | None:
    """The client's own template for an event (not an inherited one); `variant`: an alternative."""
    return db.session.scalar(select(EmailTemplate).where(EmailTemplate.client_id == client.id,
                                                         EmailTemplate.event == event,
                                                         EmailTemplate.variant == variant))


def checked_variant(event: str, variant: str | None) -> str:
    """An alternative's name as stored ("" the standard template), or ValidationError."""
    variant = (variant or "").strip().lower()
    if not variant:
        return ""
    if event != VARIANT_EVENT:
        raise ValidationError({"variant": [f"Only the {VARIANT_EVENT.replace('_', ' ')} template has alternatives."]})
    if not VARIANT_NAME.match(variant):
        raise ValidationError({"variant": ["An alternative's name is 1 to 40 lower-case letters, digits and dashes, "
                                           "e.g. short or after-hours."]})
    return variant


# Where each part's problems show in the editor.
PROBLEM_FIELDS = {"html": "html_source", "text": "text_source", "subject": "subject", "body": "body",
                  "layout": "body"}


def problem_errors(problems: list[TemplateProblem], fields: dict[str, str] = PROBLEM_FIELDS) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for p in problems:
        where = "The layout: " if p.part == "layout" and fields[p.part] != "layout" else ""
        errors.setdefault(fields[p.part], []).append(where + (f"Line {p.line}: " if p.line else "") + p.message)
    return errors


def clean_texts(texts: TemplateTexts) -> TemplateTexts:
    """A template as it is stored: line ends normalised; a rich-text one without raw sources
    (its body sanitised), a raw one without subject and body."""
    if texts.rich:
        return TemplateTexts(subject=" ".join((texts.subject or "").split()), body=clean_body(texts.body))
    return TemplateTexts((texts.text_source or "").replace("\r\n", "\n") or None,
                         (texts.html_source or "").replace("\r\n", "\n") or None)


def save_template(client: Client, event: str, text_source: str | None, html_source: str | None, shared: bool, actor,
                  *, subject: str | None = None, body: str | None = None, variant: str = "") -> EmailTemplate:
    """A client's own template for an event (or its alternative `variant`), checked first: errors
    come back with their line. With a body it is a rich-text template (subject and body; the raw
    sources are ignored). Saving a rich-text template replaces raw sources, and the other way round."""
    if event not in EVENTS:
        raise ValidationError({"event": [f"{event!r} is not one of {', '.join(EVENTS)}."]})
    variant = checked_variant(event, variant)
    texts = clean_texts(TemplateTexts(text_source, html_source, subject, body))
    problems = validate_texts(texts, layout_of(client) if texts.rich else None)
    if problems:
        raise ValidationError(problem_errors(problems))
    row = own_template(client, event, variant)
    row, changes = audit.save_changes(
        row, lambda: EmailTemplate(msp_id=client.msp_id, client_id=client.id, event=event, variant=variant),
        {"text": ("text_source", texts.text_source), "html": ("html_source", texts.html_source),
         "subject": ("subject", texts.subject), "body": ("body", texts.body),
         "shared": ("shared", bool(shared) or client.is_msp)})
    if changes:
        audit.record(actor, client.msp_id, "client", client.id, f"template {_named(event, variant)} saved", changes)
    return row


def _named(event: str, variant: str) -> str:
    return f"{event} ({variant})" if variant else event


def delete_template(client: Client, event: str, actor, variant: str = "") -> bool:
    row = own_template(client, event, variant)
    if row is None:
        return False
    db.session.delete(row)
    audit.record(actor, client.msp_id, "client", client.id, f"template {_named(event, variant)} removed", {})
    db.session.flush()
    return True


def save_layout(msp: Client, layout: Layout, actor) -> EmailLayout:
    """The MSP's layout for rich-text mail, checked first by sending a sample through it."""
    layout = Layout(*((part or "").replace("\r\n", "\n") for part in (layout.css, layout.header, layout.footer)))
    problems = validate_layout(layout)
    if problems:
        raise ValidationError(problem_errors(problems, {"layout": "layout"}))
    row = db.session.get(EmailLayout, msp.id)
    row, changes = audit.save_changes(
        row, lambda: EmailLayout(msp_id=msp.id),
        {"css": ("css", layout.css), "header": ("header", layout.header), "footer": ("footer", layout.footer)})
    if changes:
        audit.record(actor, msp.id, "client", msp.id, "email layout saved", changes)
    return row


def send_test_email(client: Client, event: str, texts: TemplateTexts, recipient: str,
                    env: SendEnvironment, actor: User, *, send: Callable = smtp_send) -> str:
    """Render a template for the sample ticket and send it now through the MSP's gateway (its own,
    else the installation's; limited, staging switches honoured, audited: `test_mail`). Returns
    what happened in plain words; nothing is recorded on any ticket."""
    msp = db.session.get(Client, client.msp_id or client.id)
    try:
        rendered = render_preview(client, texts)
    except TemplateError as exc:
        return f"Not sent: the template has an error: {exc}"
    server = outgoing_settings(None, env, client.msp_id or client.id)
    if server is None or not server.from_address:
        return "Not sent: set the default outgoing gateway and its from address first (smtp: in the configuration)."

    def build(address: str):
        return compose(rendered, from_address=server.from_address, from_name=msp.name, to=[address], host=env.host,
                       automatic=AUTOMATIC_BY_EVENT.get(event), date=utcnow())

    return send_test_mail(actor, client.msp_id, ("client", client.id), recipient, build, server, server.host,
                          send=send)

"""Email templates per client: what is in effect, editing with checks and a preview, tests."""

from __future__ import annotations

from flask import Response, abort, flash, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.clients.lookup import client_or_404
from portal.email_templates.blueprint import bp
from portal.extensions import db
from portal.mail.render import EVENTS, VARIABLES, TemplateError
from portal.mail.rich import TemplateTexts, sources_from_rich, starter_from_sources, text_to_body, validate_texts
from portal.outbound import templates as svc
from portal.outbound.servers import send_environment
from portal.outbound.templates import send_test_email
from portal.outbound.variants import VARIANT_EVENT, variant_names
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError

# The preview is a document of its own inside a sandboxed frame: the template's inline styles
# show, and nothing in it can run or load anything.
PREVIEW_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


def preview_response(rendered, error: str | None) -> Response:
    """Both parts of a rendered email (or its error) as a document for the preview frame."""
    resp = Response(render_template("email_templates/_preview.html", rendered=rendered, error=error),
                    mimetype="text/html")
    resp.headers["Content-Security-Policy"] = PREVIEW_POLICY
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    return resp


def _event_or_404(event: str) -> str:
    if event not in EVENTS:
        abort(404)
    return event


def _variant_or_404(event: str) -> str:
    """The alternative of the event's template a request is about ("" the standard one)."""
    try:
        return svc.checked_variant(event, request.values.get("variant"))
    except ValidationError:
        abort(404)


@bp.get("")
def index(client_id: int):
    client = client_or_404(client_id)
    in_effect = {event: svc.template_in_effect(client, event) for event in EVENTS}
    alternatives = [(name, svc.template_in_effect(client, VARIANT_EVENT, name)) for name in variant_names(client)]
    return render_template("email_templates/index.html", client=client, in_effect=in_effect,
                           alternatives=alternatives, variant_event=VARIANT_EVENT)


# "simple": the rich-text body in the composer's editor; "source": the two raw Jinja sources.
MODES = ("simple", "source")
REPLACE_SOURCES = ("Saving in the simple editor replaces this template's raw plain-text and HTML sources "
                   "with the body below. Tick the box to confirm.")


def _texts_from_request() -> TemplateTexts:
    if request.form.get("mode") == "simple":
        body = request.form.get("body", "")
        if not body.strip():  # without JavaScript the editor is a plain textarea
            body = text_to_body(request.form.get("body_text", ""))
        return TemplateTexts(subject=request.form.get("subject", ""), body=body)
    text, html = request.form.get("text_source", ""), request.form.get("html_source", "")
    for field, name in (("text_file", "text"), ("html_file", "html")):
        upload = request.files.get(field)
        if upload and upload.filename:
            content = upload.read(200_000).decode("utf-8", errors="replace")
            text, html = (content, html) if name == "text" else (text, content)
    return TemplateTexts(text or None, html or None)


def _form_for(client, current, mode: str) -> dict:
    """What the editor starts with in a mode: the template in effect, converted when it was
    written in the other mode."""
    form = {"mode": mode, "text_source": current.text_source or "", "html_source": current.html_source or "",
            "subject": current.subject or "", "body": current.body or "",
            # A new template is shared with sub-clients unless unticked: what people expect.
            "shared": current.source is not client or current.template.shared}
    if mode == "simple" and current.body is None:
        form["subject"], form["body"] = starter_from_sources(current.text_source, current.html_source)
    elif mode == "source" and current.body is not None:
        form["text_source"], form["html_source"] = sources_from_rich(current.subject, current.body,
                                                                     current.layout or svc.layout_of(client))
    return form


@bp.route("/<event>", methods=["GET", "POST"])
@admin_required
def edit(client_id: int, event: str):
    client = client_or_404(client_id)
    event = _event_or_404(event)
    try:
        variant = svc.checked_variant(event, request.values.get("variant"))
    except ValidationError as exc:  # a new alternative's name, as typed on the templates page
        flash(" ".join(m for ms in exc.errors.values() for m in ms), "error")
        return hx_redirect(url_for("email_templates.index", client_id=client.id))
    current = svc.template_in_effect(client, event, variant)
    own_sources = current.source is client and current.body is None and current.variant == variant
    mode = request.values.get("mode")
    mode = mode if mode in MODES else ("source" if own_sources else "simple")
    form, errors, status = _form_for(client, current, mode), {}, 200
    if request.method == "POST":
        texts = _texts_from_request()
        mode = "simple" if texts.rich else "source"
        form.update(mode=mode, text_source=texts.text_source or "", html_source=texts.html_source or "",
                    subject=texts.subject or "", body=texts.body or "", shared=request.form.get("shared") == "1")
        try:
            if texts.rich and own_sources and request.form.get("replace_sources") != "1":
                raise ValidationError({"replace_sources": [REPLACE_SOURCES]})
            svc.save_template(client, event, texts.text_source, texts.html_source, form["shared"], current_user,
                              subject=texts.subject, body=texts.body, variant=variant)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
        else:
            named = event.replace("_", " ") + (f" ({variant})" if variant else "")
            flash(f"The {named} template of {client.name} is saved.", "success")
            return hx_redirect(url_for("email_templates.index", client_id=client.id))
    return render_page("email_templates/edit.html", "email_templates/_form.html", client=client, event=event,
                       current=current, form=form, errors=errors, variables=VARIABLES, variant=variant,
                       replaces_sources=mode == "simple" and own_sources), status


@bp.post("/<event>/preview")
@admin_required
def preview(client_id: int, event: str):
    """The HTML part rendered for the sample ticket, as its own document (for the frame)."""
    client = client_or_404(client_id)
    _event_or_404(event)
    rendered, error = None, None
    try:
        rendered = svc.render_preview(client, _texts_from_request())
    except TemplateError as exc:
        error = str(exc)
    return preview_response(rendered, error)


@bp.post("/<event>/check")
@admin_required
def check(client_id: int, event: str):
    """As the editor types: the problems with their lines, and the subject and text rendered."""
    client = client_or_404(client_id)
    _event_or_404(event)
    texts, layout = _texts_from_request(), svc.layout_of(client)
    problems = validate_texts(texts, layout)
    rendered = None
    if not problems:
        try:
            rendered = svc.render_preview(client, texts, layout)
        except TemplateError as exc:
            problems = [exc.problem]
    return render_template("email_templates/_check.html", problems=problems, rendered=rendered)


@bp.post("/<event>/revert")
@admin_required
@asks_first("Use the inherited template")
def revert(client_id: int, event: str):
    client = client_or_404(client_id)
    variant = _variant_or_404(_event_or_404(event))
    if svc.delete_template(client, event, current_user, variant):
        named = event.replace("_", " ") + (f" ({variant})" if variant else "")
        flash(f"{client.name} uses the inherited {named} template again.", "success")
    return hx_redirect(url_for("email_templates.index", client_id=client.id))


@bp.post("/<event>/test")
@admin_required
def test_send(client_id: int, event: str):
    """"Send test email": the template as typed, for the sample ticket, to one recipient, now."""
    client = client_or_404(client_id)
    result = send_test_email(client, _event_or_404(event), _texts_from_request(),
                             request.form.get("recipient", ""), send_environment(current_user), current_user)
    return render_template("email_templates/_test_result.html", result=result)

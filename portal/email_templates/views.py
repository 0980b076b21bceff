"""Email templates per client: what is in effect, editing with checks and a preview, tests."""

from __future__ import annotations

from flask import Response, abort, flash, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.clients.lookup import client_or_404
from portal.email_templates.blueprint import bp
from portal.extensions import db
from portal.mail.render import EVENTS, VARIABLES, TemplateError, render, validate_template
from portal.outbound import templates as svc
from portal.outbound.servers import send_environment
from portal.outbound.templates import send_test_email
from portal.responses import hx_redirect, render_page
from portal.services import ValidationError

# The preview is a document of its own inside a sandboxed frame: the template's inline styles
# show, and nothing in it can run or load anything.
PREVIEW_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


def _event_or_404(event: str) -> str:
    if event not in EVENTS:
        abort(404)
    return event


@bp.get("")
def index(client_id: int):
    client = client_or_404(client_id)
    in_effect = {event: svc.template_in_effect(client, event) for event in EVENTS}
    return render_template("email_templates/index.html", client=client, in_effect=in_effect)


def _sources_from_request() -> tuple[str, str]:
    text, html = request.form.get("text_source", ""), request.form.get("html_source", "")
    for field, name in (("text_file", "text"), ("html_file", "html")):
        upload = request.files.get(field)
        if upload and upload.filename:
            content = upload.read(200_000).decode("utf-8", errors="replace")
            text, html = (content, html) if name == "text" else (text, content)
    return text, html


@bp.route("/<event>", methods=["GET", "POST"])
@admin_required
def edit(client_id: int, event: str):
    client = client_or_404(client_id)
    event = _event_or_404(event)
    current = svc.template_in_effect(client, event)
    errors: dict = {}
    form = {"text_source": current.text_source or "", "html_source": current.html_source or "",
            # A new template is shared with sub-clients unless unticked: what people expect.
            "shared": current.source is not client or current.template.shared}
    status = 200
    if request.method == "POST":
        text, html = _sources_from_request()
        form = {"text_source": text, "html_source": html, "shared": request.form.get("shared") == "1"}
        try:
            svc.save_template(client, event, text, html, form["shared"], current_user)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
        else:
            flash(f"The {event.replace('_', ' ')} template of {client.name} is saved.", "success")
            return hx_redirect(url_for("email_templates.index", client_id=client.id))
    return render_page("email_templates/edit.html", "email_templates/_form.html", client=client, event=event,
                       current=current, form=form, errors=errors, variables=VARIABLES), status


@bp.post("/<event>/preview")
@admin_required
def preview(client_id: int, event: str):
    """The HTML part rendered for the sample ticket, as its own document (for the frame)."""
    client = client_or_404(client_id)
    _event_or_404(event)
    text, html = _sources_from_request()
    rendered, error = None, None
    try:
        rendered = render((text or None, html or None), svc.preview_context(client))
    except TemplateError as exc:
        error = str(exc)
    resp = Response(render_template("email_templates/_preview.html", rendered=rendered, error=error),
                    mimetype="text/html")
    resp.headers["Content-Security-Policy"] = PREVIEW_POLICY
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    return resp


@bp.post("/<event>/check")
@admin_required
def check(client_id: int, event: str):
    """As the editor types: the problems with their lines, and the subject and text rendered."""
    client = client_or_404(client_id)
    _event_or_404(event)
    text, html = _sources_from_request()
    problems = validate_template(text or None, html or None)
    rendered = None
    if not problems:
        try:
            rendered = render((text or None, html or None), svc.preview_context(client))
        except TemplateError as exc:
            problems = [exc.problem]
    return render_template("email_templates/_check.html", problems=problems, rendered=rendered)


@bp.post("/<event>/revert")
@admin_required
def revert(client_id: int, event: str):
    client = client_or_404(client_id)
    if svc.delete_template(client, _event_or_404(event), current_user):
        flash(f"{client.name} uses the inherited {event.replace('_', ' ')} template again.", "success")
    return hx_redirect(url_for("email_templates.index", client_id=client.id))


@bp.post("/<event>/test")
@admin_required
def test_send(client_id: int, event: str):
    """"Send test email": the template as typed, for the sample ticket, to one recipient, now."""
    client = client_or_404(client_id)
    text, html = _sources_from_request()
    result = send_test_email(client, _event_or_404(event), text or None, html or None,
                             request.form.get("recipient", ""), send_environment(current_user), current_user)
    return render_template("email_templates/_test_result.html", result=result)

"""The layout an MSP's rich-text emails are sent in (CSS, header, footer): one per MSP, edited
from the MSP's email templates; sub-clients' pages link to it. Admins only."""

from __future__ import annotations

from flask import flash, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.clients.lookup import client_or_404
from portal.email_templates.blueprint import bp
from portal.email_templates.views import preview_response
from portal.extensions import db
from portal.mail.render import TemplateError
from portal.mail.rich import Layout, default_layout, render_rich
from portal.outbound import templates as svc
from portal.responses import hx_redirect, render_page
from portal.services import ValidationError

# What the layout's preview shows inside the frame.
SAMPLE_BODY = ("<div>Hello {{ contact.name }},</div><div><br></div><div>this is how an email written in the "
               "simple editor looks in this layout.</div><div><br></div><blockquote>{{ message.html }}</blockquote>"
               "<div>Kind regards,<br>{{ msp.name }}</div>")


def _msp_or_404(client_id: int):
    """The layout is the MSP's: a client's page of it edits its MSP's."""
    return svc.msp_of(client_or_404(client_id))


def _layout_from_request() -> Layout:
    return Layout(request.form.get("css", ""), request.form.get("header", ""), request.form.get("footer", ""))


@bp.route("/layout", methods=["GET", "POST"])
@admin_required
def layout(client_id: int):
    msp = _msp_or_404(client_id)
    current, errors, status = svc.layout_of(msp), {}, 200
    if request.method == "POST":
        current = _layout_from_request()
        try:
            svc.save_layout(msp, current, current_user)
        except ValidationError as exc:
            db.session.rollback()
            errors, status = exc.errors, 422
        else:
            flash(f"The email layout of {msp.name} is saved.", "success")
            return hx_redirect(url_for("email_templates.index", client_id=msp.id))
    return render_page("email_templates/layout.html", "email_templates/_layout_form.html", client=msp,
                       layout=current, default=default_layout(), errors=errors), status


@bp.post("/layout/preview")
@admin_required
def layout_preview(client_id: int):
    """A sample rich-text email in the layout as typed, as its own document (for the frame)."""
    msp = _msp_or_404(client_id)
    rendered, error = None, None
    try:
        rendered = render_rich("Sample: [{{ ticket.reference }}] {{ ticket.subject }}", SAMPLE_BODY,
                               _layout_from_request(), svc.preview_context(msp))
    except TemplateError as exc:
        error = str(exc)
    return preview_response(rendered, error)

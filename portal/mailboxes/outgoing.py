"""A mailbox's own outgoing (SMTP) server: set, change, remove, and "send test email"."""

from __future__ import annotations

from flask import flash, render_template, request, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.display import place
from portal.extensions import db
from portal.mailboxes.blueprint import bp
from portal.mailboxes.forms import OutgoingForm, outgoing_presets
from portal.mailboxes.lookup import keys, mailbox_or_404
from portal.outbound import servers as svc
from portal.outbound.servers import own_server, send_environment
from portal.outbound.test_mail import send_outgoing_test
from portal.responses import asks_first, hx_redirect, render_page
from portal.services import ValidationError


@bp.route("/<int:mailbox_id>/outgoing", methods=["GET", "POST"])
@admin_required
def outgoing(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    server = own_server(mailbox)
    form = OutgoingForm()
    if request.method == "GET":
        if server is not None:
            form.fill(server)
        else:
            form.security.data, form.timeout.data, form.verify_tls.data = "starttls", "30", True
    if form.validate_on_submit():
        try:
            changes = svc.save_outgoing_server(mailbox, form.values(), keys=keys(), actor=current_user)
        except ValidationError as exc:
            db.session.rollback()
            mailbox = mailbox_or_404(mailbox_id)
            server = own_server(mailbox)
            form.service_errors = place(exc.errors, set(form._fields), {"from": "from_address"})
        else:
            flash(f"Outgoing server of {mailbox.address} saved." if changes else "Nothing changed.", "success")
            return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox.id) + "#outgoing")
    return render_page("mailboxes/outgoing.html", "mailboxes/_outgoing_form.html", form=form, mailbox=mailbox,
                       server=server, presets=outgoing_presets(mailbox.auth)), 422 if request.method == "POST" else 200


@bp.post("/<int:mailbox_id>/outgoing/remove")
@admin_required
@asks_first("Remove the outgoing server")
def remove_outgoing(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    if svc.remove_outgoing_server(mailbox, actor=current_user):
        flash(f"{mailbox.address} sends through the default gateway again.", "success")
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox.id) + "#outgoing")


@bp.post("/<int:mailbox_id>/outgoing/test")
@admin_required
def test_outgoing(mailbox_id: int):
    """"Send test email" through the server this mailbox's mail would use (the saved settings)."""
    mailbox = mailbox_or_404(mailbox_id)
    result = send_outgoing_test(mailbox, request.form.get("recipient", ""), send_environment(current_user),
                                actor=current_user)
    # A test with the saved password has a history entry: the answer commits it.
    return render_template("mailboxes/_send_result.html", result=result)

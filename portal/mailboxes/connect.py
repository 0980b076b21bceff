"""Connect and Disconnect an OAuth2 mailbox (delegated): the sign-in starts here and comes back to
the one callback of portal.oauth_callback, which hands a mailbox's to finish(). An app-only
mailbox whose grant was refused is tried again here (nobody signs in)."""

from __future__ import annotations

from flask import abort, current_app, flash, url_for
from flask_login import current_user

from portal.auth.access import admin_required
from portal.mailboxes.blueprint import bp
from portal.mailboxes.lookup import keys, mailbox_or_404
from portal.oauth import OAuthError
from portal.responses import asks_first, hx_redirect
from portal.services import mailbox_connect as svc
from portal.services.mailbox_tokens import connect_app
from portal.services.mailboxes import server_reach
from portal.services.oauth_states import StartedSignIn
from portal.transport.base import TransportError


def _page(mailbox_id: int, anchor: str = ""):
    # No anchor from the page itself: a location that differs only by its #fragment is not loaded again.
    return hx_redirect(url_for("mailboxes.detail", mailbox_id=mailbox_id) + anchor)


@bp.post("/<int:mailbox_id>/connect")
@admin_required
def connect(mailbox_id: int):
    """Off to the provider's sign-in (htmx follows HX-Redirect; without script, a 303)."""
    mailbox = mailbox_or_404(mailbox_id)
    try:
        url = svc.start_connect(mailbox, keys(), current_user, current_app.config["TIDEMARK_PORTAL_URL"])
    except OAuthError as error:
        flash(f"Cannot connect: {error.message}", "error")
        return _page(mailbox.id)
    return hx_redirect(url)


@bp.post("/<int:mailbox_id>/try-again")
@admin_required
def try_again(mailbox_id: int):
    """The app flow's Connect: a token by client credentials now, after a refusal an admin has
    mended (a new client secret, the tenant's consent). Refused again: the provider's words."""
    mailbox = mailbox_or_404(mailbox_id)
    try:
        connect_app(mailbox, keys(), reach=server_reach(current_user), actor=current_user)
    except TransportError as error:
        flash(f"Still not signed in: {error.message}", "error")
    else:
        flash(f"Signed in as the app: {mailbox.address} has a token again.", "success")
    return _page(mailbox.id, "#sign-in")


@bp.post("/<int:mailbox_id>/disconnect")
@admin_required
@asks_first("Disconnect this mailbox")
def disconnect(mailbox_id: int):
    mailbox = mailbox_or_404(mailbox_id)
    outcome = svc.disconnect(mailbox, keys(), current_user)
    flash(outcome.message, "success" if outcome.ok else "warning")
    return _page(mailbox.id)


def finish(started: StartedSignIn, answer: dict):
    """The callback of a mailbox's Connect: the mailbox is looked up again within the signed-in
    MSP (404 otherwise), and only an admin may still finish."""
    mailbox = mailbox_or_404(started.subject_id)
    if not current_user.is_admin:
        abort(403)
    outcome = svc.finish_connect(mailbox, keys(), started, answer, current_user)
    flash(outcome.message, "success" if outcome.ok else "error")
    return _page(mailbox.id, "#sign-in")

"""`GET /oauth/callback`: the started sign-in is taken (once, by the person who started it) and
handed to the part of the portal that started it, by its purpose.

The route is public: a tenant consent is finished by a customer's global admin, who has no portal
account (oauth_states.UNBOUND). Every other purpose still needs its person signed in: someone who
is not is sent to sign in first and comes back here."""

from __future__ import annotations

from collections.abc import Callable

from flask import g, render_template, request
from flask_login import current_user

from portal.clients import consent_callback
from portal.extensions import login_manager
from portal.mailboxes import connect as mailbox_connect
from portal.oauth_callback.blueprint import bp
from portal.services import oauth_states
from portal.services.oauth_states import StartedSignIn

EXPIRED = "This sign-in link has expired or was started by someone else; start again from the mailbox."
# To someone not signed in: most likely a customer's admin with a consent link used or too old.
LINK_EXPIRED = ("This link has expired, was already used, or was not made by this portal. "
                "Ask your service provider for a new one.")


def _not_supported_yet(started: StartedSignIn, answer: dict):
    return _refused("This kind of sign-in is not supported yet.")


# Purpose (oauth_states.PURPOSES) -> what finishes it: (the started sign-in, the query) -> answer.
HANDLERS: dict[str, Callable] = {
    "mailbox": mailbox_connect.finish,
    "tenant consent": consent_callback.finish,
}


def _refused(message: str):
    return render_template("errors/error.html", status=400, title="Sign-in not finished", message=message), 400


@bp.get("/oauth/callback")
def callback():
    state = request.args.get("state")
    signed_in = current_user.is_authenticated
    if signed_in:
        g.msp_id = current_user.msp_id  # as for every signed-in page (a public route does not get it)
    if not signed_in and oauth_states.purpose_of(state) not in (None, *oauth_states.UNBOUND):
        return login_manager.unauthorized()  # a Connect whose session ended: sign in, then back here
    started = oauth_states.take(state, user_id=current_user.id if signed_in else None)
    if started is None:
        return _refused(EXPIRED if signed_in else LINK_EXPIRED)
    if started.purpose not in oauth_states.UNBOUND and started.msp_id != current_user.msp_id:
        return _refused(EXPIRED)
    return HANDLERS.get(started.purpose, _not_supported_yet)(started, request.args.to_dict())

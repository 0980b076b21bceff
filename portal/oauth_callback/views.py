"""`GET /oauth/callback`: the started sign-in is taken (once, by the person who started it) and
handed to the part of the portal that started it, by its purpose."""

from __future__ import annotations

from collections.abc import Callable

from flask import g, render_template, request
from flask_login import current_user

from portal.mailboxes import connect as mailbox_connect
from portal.oauth_callback.blueprint import bp
from portal.services import oauth_states
from portal.services.oauth_states import StartedSignIn

EXPIRED = "This sign-in link has expired or was started by someone else; start again from the mailbox."


def _not_supported_yet(started: StartedSignIn, answer: dict):
    return _refused("This kind of sign-in is not supported yet.")


# Purpose (oauth_states.PURPOSES) -> what finishes it: (the started sign-in, the query) -> answer.
HANDLERS: dict[str, Callable] = {
    "mailbox": mailbox_connect.finish,
    "tenant consent": _not_supported_yet,
}


def _refused(message: str):
    return render_template("errors/error.html", status=400, title="Sign-in not finished", message=message), 400


@bp.get("/oauth/callback")
def callback():
    started = oauth_states.take(request.args.get("state"), user_id=current_user.id)
    if started is None or started.msp_id != g.msp_id:
        return _refused(EXPIRED)
    return HANDLERS.get(started.purpose, _not_supported_yet)(started, request.args.to_dict())

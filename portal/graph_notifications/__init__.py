"""Where Microsoft Graph calls us: `POST /graph/notifications` (new mail) and `POST /graph/lifecycle`
(lifecycle events). Public (Graph signs in nowhere) and without CSRF (Graph has no form token):
each item proves itself by its subscription's clientState (portal.inbound.graph_push), and an
answer says nothing beyond 202, whatever the request held.

Graph first checks each address by calling it with `?validationToken=...`, and wants the token
back as text/plain within 10 seconds: answered here before anything else is read."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from portal.extensions import csrf
from portal.inbound.graph_push import LIFECYCLE_PATH, NOTIFICATION_PATH, act_on, take_notifications

bp = Blueprint("graph_notifications", __name__)
csrf.exempt(bp)

# Graph sends at most a few hundred items of a few hundred bytes each; anything larger is not Graph.
MAX_BODY = 256 * 1024
MAX_TOKEN = 1024


@bp.post(NOTIFICATION_PATH)
def notifications():
    return _answer()


@bp.post(LIFECYCLE_PATH)
def lifecycle():
    return _answer()


def _answer():
    token = request.args.get("validationToken")
    if token is not None:
        # The handshake: the token back, as plain text (never as HTML: it is whatever was sent).
        if not token or len(token) > MAX_TOKEN:
            return Response("", status=400, content_type="text/plain; charset=utf-8")
        return Response(token, status=200, content_type="text/plain; charset=utf-8")
    if (request.content_length or 0) > MAX_BODY:
        return Response("", status=413, content_type="text/plain; charset=utf-8")
    request.max_content_length = MAX_BODY  # a body sent without its length is cut off here too
    body = request.get_data(cache=False)
    act_on(take_notifications(body, current_app.config["TIDEMARK_ENCRYPTION_KEY"]))
    return Response("", status=202, content_type="text/plain; charset=utf-8")

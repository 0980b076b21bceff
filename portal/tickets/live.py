"""The ticket pages kept live (portal.live): a stream per open page, the parts of the ticket page
it asks for again when told they changed, and "Ana is replying".

Server-sent events, not polling: under `make run` gunicorn runs gthread workers (workers/stack.py),
where a stream holds a thread, not a worker process, for at most its lifetime
(TIDEMARK_LIVE_STREAM_SECONDS, 5 minutes; the browser then reconnects), and nothing of the
database. The stream is opened only after the ticket was found within the signed-in MSP."""

from __future__ import annotations

from flask import Response, abort, g, render_template, request
from flask_login import current_user

from portal import live
from portal.tickets.blueprint import bp
from portal.tickets.page import PART_CONTEXTS, ticket_or_404


def _tab() -> str:
    return request.args.get("tab", "")[:40]


def _stream(stream: live.Stream) -> Response:
    if not stream.admit():
        # EventSource does not retry a refused stream: the page refreshes itself every 30 s
        # instead and asks for a stream again later (static/live.js).
        return Response("Too many live pages open: this page refreshes itself every 30 seconds instead.", 429,
                        mimetype="text/plain", headers={"Retry-After": "120", "Cache-Control": "no-store"})
    # No buffering on the way (nginx honours X-Accel-Buffering), nothing cached.
    response = Response(stream.events(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    # The server closes the response even when its events were never read (the client went
    # away first): the stream's places are given back then.
    response.call_on_close(stream.release)
    return response


@bp.get("/events")
def list_events():
    """The ticket list's stream: which of the MSP's tickets changed or arrived."""
    return _stream(live.Stream(live.msp_channel(g.msp_id), msp_id=g.msp_id, user_id=current_user.id, tab=_tab()))


@bp.get("/<reference>/events")
def events(reference: str):
    """One ticket page's stream: which part changed, and who is replying now."""
    ticket = ticket_or_404(reference)
    return _stream(live.Stream(live.ticket_channel(ticket.id), msp_id=g.msp_id, user_id=current_user.id, tab=_tab(),
                               first=live.who_is_typing(ticket.id, but=current_user.id)))


@bp.get("/<reference>/parts/<name>")
def part(reference: str, name: str):
    """One part of the ticket page drawn again, with only the queries that part needs."""
    if name not in PART_CONTEXTS:
        abort(404)
    template, context = PART_CONTEXTS[name]
    ticket = ticket_or_404(reference)
    # fragment=False: the flashed messages stay for the page the person asked for.
    return render_template(template, fragment=False, oob=False, ticket=ticket, **context(ticket))


@bp.post("/<reference>/typing")
def typing(reference: str):
    """The composer is open and typed in (sent again every few seconds), or was left."""
    ticket = ticket_or_404(reference)
    live.typing(ticket.id, current_user.id, current_user.name or current_user.email,
                stopped=request.form.get("stopped") == "1")
    return "", 204

"""The one way a page looks up a client by id: a client of the signed-in user's MSP, else 404
(never 403, so another MSP's ids cannot even be probed)."""

from __future__ import annotations

from flask import abort, g

from portal.services import clients as client_svc


def client_or_404(client_id: int | None):
    client = client_svc.get_client(g.msp_id, client_id or 0)
    if client is None:
        abort(404)
    return client

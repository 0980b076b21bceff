"""Canned responses: ready-made reply bodies per client, inherited down the tree like email
templates. A client sees its own responses and those its ancestors share; of two with the same
name the nearer client's wins. Flush, never commit."""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass

from sqlalchemy import func, select

from portal import tenancy
from portal.extensions import db
from portal.mail.html_body import html_to_text
from portal.mail.sanitize import sanitize_html
from portal.models import CannedResponse, Client
from portal.services import ValidationError, audit

NAME_MAX = 120
BODY_MAX = 200_000


@dataclass(frozen=True)
class CannedInEffect:
    response: CannedResponse
    source: Client  # the client whose response it is


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def in_effect(client: Client) -> list[CannedInEffect]:
    """What a technician may insert on this client's tickets, by name."""
    chain = tenancy.lineage(client)
    rows = db.session.scalars(select(CannedResponse).where(CannedResponse.msp_id == client.msp_id,
                                                           CannedResponse.client_id.in_([c.id for c in chain])))
    by_client: dict[int, list[CannedResponse]] = {}
    for row in rows:
        by_client.setdefault(row.client_id, []).append(row)
    seen: dict[str, CannedInEffect] = {}
    for row, owner in tenancy.shared_down(chain, by_client):
        seen.setdefault(_key(row.name), CannedInEffect(row, owner))
    return sorted(seen.values(), key=lambda e: _key(e.response.name))


def get_in_effect(client: Client, response_id: int) -> CannedResponse | None:
    """The response if this client may use it (its own or shared down to it and not replaced)."""
    return next((e.response for e in in_effect(client) if e.response.id == response_id), None)


def get_own(client: Client, response_id: int) -> CannedResponse | None:
    return db.session.scalar(select(CannedResponse).where(CannedResponse.id == response_id,
                                                          CannedResponse.client_id == client.id,
                                                          CannedResponse.msp_id == client.msp_id))


def get_own_by_name(client: Client, name: str, *, other_than: CannedResponse | None = None) -> CannedResponse | None:
    """The client's own response of this name (in any case), leaving out `other_than`."""
    return db.session.scalar(select(CannedResponse).where(
        CannedResponse.client_id == client.id, func.lower(CannedResponse.name) == " ".join(name.split()).lower(),
        *([CannedResponse.id != other_than.id] if other_than is not None else [])))


def body_from(text: str, html: str) -> str:
    """Sanitised HTML from what the editor wrote, or from plain text (the form without JavaScript)."""
    html = (html or "").strip()
    if html:
        return sanitize_html(html)
    lines = (text or "").strip().replace("\r\n", "\n").split("\n")
    return "<br>".join(html_lib.escape(line) for line in lines) if any(lines) else ""


def save(client: Client, *, name: str, text: str = "", html: str = "", shared: bool = True, actor=None,
         response: CannedResponse | None = None) -> CannedResponse:
    """Create a response of this client, or change one of its own."""
    errors: dict[str, list[str]] = {}
    name = " ".join((name or "").split())
    body = body_from(text, html)
    if not name:
        errors["name"] = ["Give the response a name."]
    elif len(name) > NAME_MAX:
        errors["name"] = [f"The name is at most {NAME_MAX} characters."]
    else:
        clash = get_own_by_name(client, name, other_than=response)
        if clash is not None:
            errors["name"] = [f"{client.name} already has a response called {clash.name!r}."]
    if not html_to_text(body).strip() and "<img" not in body:
        errors["text"] = ["Write the response."]
    elif len(body) > BODY_MAX:
        errors["text"] = ["The response is too long."]
    if errors:
        raise ValidationError(errors)
    response, changes = audit.save_changes(
        response, lambda: CannedResponse(msp_id=client.msp_id, client_id=client.id),
        {"name": ("name", name), "body": ("body_html", body), "shared": ("shared", bool(shared))})
    if changes:
        # The action has room for no name: the changes always say which response it is.
        changes.setdefault("name", [response.name, response.name])
        audit.record(actor, client.msp_id, "client", client.id, "canned response saved", changes)
    return response


def delete(response: CannedResponse, actor=None) -> None:
    audit.record(actor, response.msp_id, "client", response.client_id, "canned response removed",
                 {"name": [response.name, None], "body": [response.body_html, None]})
    db.session.delete(response)
    db.session.flush()

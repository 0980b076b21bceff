"""Mailboxes: the list and one mailbox's page, its routes, and its own outgoing server.

The blueprint is made here and every module of the package adds its pages to it; importing the
package is what brings them all in (the app factory needs nothing else)."""

from flask import Blueprint

bp = Blueprint("mailboxes", __name__, url_prefix="/mailboxes")

from portal.mailboxes import outgoing, routes, views  # noqa: E402,F401 - each adds its routes to bp

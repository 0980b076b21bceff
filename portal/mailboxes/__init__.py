"""Mailboxes: the list and one mailbox's page, its routes, its own outgoing server, and
Connect / Disconnect for OAuth2.

The blueprint lives in portal.mailboxes.blueprint and every module of the package adds its pages
to it; importing the package is what brings them all in (the app factory needs nothing else)."""

from portal.mailboxes import connect, outgoing, routes, views  # noqa: F401 - each adds its routes to bp
from portal.mailboxes.blueprint import bp

__all__ = ["bp"]

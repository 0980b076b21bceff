"""Tickets: the list and its bulk bar, one ticket's page and its fields.

The blueprint lives in portal.tickets.blueprint and every module of the package adds its pages
to it; importing the package is what brings them all in (the app factory needs nothing else)."""

from portal.tickets import bulk, fields, live, merge, views  # noqa: F401 - each adds its routes to bp
from portal.tickets.blueprint import bp

__all__ = ["bp"]

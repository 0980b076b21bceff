"""Tickets: the list and its bulk bar, one ticket's page and its fields.

The blueprint is made here and every module of the package adds its pages to it; importing the
package is what brings them all in (the app factory needs nothing else)."""

from flask import Blueprint

bp = Blueprint("tickets", __name__, url_prefix="/tickets")

from portal.tickets import bulk, fields, views  # noqa: E402,F401 - each adds its routes to bp

"""Email templates and canned responses per client.

The blueprint lives in portal.email_templates.blueprint and every module of the package adds its
pages to it; importing the package is what brings them all in (the app factory needs nothing else)."""

from portal.email_templates import canned, layout, views  # noqa: F401 - each adds its routes to bp
from portal.email_templates.blueprint import bp

__all__ = ["bp"]

"""Clients: the tree, a client's page and settings (views) and its service report (reports),
each adding its pages to the blueprint of portal.clients.views."""

from portal.clients import reports, views  # noqa: F401 - each adds its routes to bp

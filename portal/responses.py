"""Small htmx response helpers on top of flask-htmx: one URL, two renderings."""

from __future__ import annotations

from flask import redirect, render_template
from flask_htmx.responses import HTMXResponseClientRedirect

from portal.extensions import htmx


def render_page(page_template: str, fragment_template: str, /, **context):
    """The whole page for a normal request, only the fragment for an htmx request that is not
    a boosted navigation (boosted requests swap the whole body)."""
    if htmx and not htmx.boosted:
        return render_template(fragment_template, **context)
    return render_template(page_template, **context)


def hx_redirect(location: str):
    """htmx ignores the headers of a 3xx, so htmx requests get HX-Redirect instead."""
    if htmx:
        return HTMXResponseClientRedirect(location)
    return redirect(location, 303)

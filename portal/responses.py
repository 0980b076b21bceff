"""Small htmx response helpers on top of flask-htmx: one URL, two renderings."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit, urlunsplit

from flask import redirect, render_template, request
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


def same_site_path(target: str | None) -> str | None:
    """The path and query of `target` if it is a page of this site, else None: the only kind of
    address the portal redirects to from something the request brought (a next, a Referer)."""
    # Browsers read a backslash as a slash and drop tabs and newlines: "/\x" means "//x".
    if not target or "\\" in target or any(ord(c) < 0x20 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        here = urlsplit(request.host_url)
        if (parts.scheme.lower(), parts.netloc.lower()) != (here.scheme, here.netloc.lower()):
            return None
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return urlunsplit(("", "", parts.path, parts.query, ""))


def asks_first(action: str):
    """For a POST whose form asks with hx-confirm: htmx asked in the browser before it sent the
    request; a plain submit (script off, or a click before the page's script had loaded) has not
    asked anyone, so it gets a page that asks, and acts only on that page's "yes"."""
    def decorate(view):
        @wraps(view)
        def asking(*args, **kwargs):
            if htmx or request.form.get("confirmed") == "yes":
                return view(*args, **kwargs)
            fields = [(k, v) for k, v in request.form.items(multi=True) if k not in ("csrf_token", "confirmed")]
            back = same_site_path(request.referrer) or "/"
            return render_template("confirm.html", action=action, fields=fields, back=back)
        asking.asks_first = action
        return asking
    return decorate

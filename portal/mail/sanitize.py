"""HTML from strangers, made safe to show inside the portal (nh3 underneath).

Removed: scripts, styles blocks, event handlers, javascript:/vbscript: links, forms, frames,
`<base>`/`<meta>`/`<link>`, ids and classes (they would clash with the portal's own page),
CSS that can fetch (url(), background images) and, unless asked for, remote images (tracking
pixels). `cid:` images stay, optionally rewritten to portal URLs with `cid_urls`.
"""
from __future__ import annotations

import html as html_lib
from collections.abc import Mapping
from urllib.parse import unquote

import nh3

from portal.mail.html_body import crude_text, html_too_complex

_TAGS = {
    "a", "abbr", "address", "b", "big", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q",
    "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
}
_COMMON = {"style", "align", "valign", "dir", "lang", "title", "width", "height"}
_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "td": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "bgcolor", "nowrap", "scope"},
    "tr": {"bgcolor"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
    "blockquote": {"cite", "type"},
    "q": {"cite"},
}
# CSS properties that cannot load anything or escape their box.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
    "text-transform", "line-height", "letter-spacing", "word-spacing", "white-space",
    "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "width", "height", "max-width", "min-width", "max-height", "min-height", "display",
    "list-style-type", "table-layout", "direction", "unicode-bidi", "word-break", "word-wrap",
    "overflow-wrap",
}
_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_DATA_IMAGE_PREFIXES = ("data:image/png", "data:image/jpeg", "data:image/jpg", "data:image/gif",
                        "data:image/webp", "data:image/bmp")
_REL = "noopener noreferrer nofollow"


def sanitize_html(html: str, *, allow_remote_images: bool = False,
                  cid_urls: Mapping[str, str] | None = None) -> str:
    """Safe HTML for display. `cid_urls` maps Content-IDs (without <>) to portal URLs. HTML the
    sanitiser would spend minutes on (see html_too_complex) comes back as its escaped text."""
    if not html:
        return ""
    if html_too_complex(html):
        return f"<p>{html_lib.escape(crude_text(html))}</p>"

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        low = value.strip().lower()
        if attr == "href":
            return None if low.startswith("data:") else value
        if attr == "src":
            if low.startswith("cid:"):
                if cid_urls is not None:
                    cid = value.strip()[4:].strip("<>")
                    return cid_urls.get(cid) or cid_urls.get(unquote(cid), value)  # RFC 2392 %-encodes
                return value
            if low.startswith("data:"):
                return value if low.startswith(_DATA_IMAGE_PREFIXES) else None
            if low.startswith(("http:", "https:", "//")):
                return value if allow_remote_images else None
            return None
        return value

    try:
        return nh3.clean(
            html,
            tags=_TAGS,
            clean_content_tags={"script", "style", "title", "head", "template", "noscript",
                                "xml", "svg", "math", "iframe", "object", "embed", "textarea",
                                "select", "button"},
            attributes=_ATTRIBUTES,
            attribute_filter=attribute_filter,
            url_schemes=_SCHEMES,
            strip_comments=True,
            link_rel=_REL,
            filter_style_properties=_STYLE_PROPERTIES,
            set_tag_attribute_values={"a": {"target": "_blank"}},
        )
    except Exception:
        # A sanitiser failure must never show raw HTML: show it as text instead.
        return f"<pre>{html_lib.escape(html)}</pre>"

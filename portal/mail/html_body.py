"""What an HTML body says: its text (for HTML-only mail and derived text parts) and the
images it shows by `cid:`. Used by the parser, the template renderer and the ticket pages."""
from __future__ import annotations

import html as html_lib
import re
from urllib.parse import unquote

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_properties import Display
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_element import HtmlElement

from portal.mail.charset import scrub

# inscriptis's "relaxed" profile indents the content of every <div> by two spaces; editors
# (ours, Outlook, Gmail) write one <div> per line, so every line of a reply's plain-text part
# after the first (the first is stripped) came out indented. Divs are plain blocks here.
_CSS = {**CSS_PROFILES["relaxed"], "div": HtmlElement(display=Display.block)}
_CONFIG = ParserConfig(css=_CSS)


_CID_RE = re.compile(r"cid:\s*<?([^\"'\s<>()]+)", re.IGNORECASE)


def html_content_ids(html: str | None) -> set[str]:
    """The Content-IDs (without <>) that an HTML body shows as `cid:` URLs, as written and
    %-decoded (RFC 2392 URLs encode what a Content-ID may hold, e.g. `cid:logo%40corp`)."""
    found: set[str] = set()
    for m in _CID_RE.finditer(html or ""):
        found.add(m.group(1))
        found.add(unquote(m.group(1)))
    return found


def html_to_text(html: str) -> str:
    """Readable text from an HTML body (for HTML-only mail)."""
    if not html or not html.strip():
        return ""
    try:
        return scrub(get_text(html, _CONFIG)).strip("\n")
    except Exception:
        # inscriptis/lxml can choke on hostile markup: strip tags crudely instead.
        return crude_text(html)


def crude_text(html: str) -> str:
    """The text between the tags, in one pass (for HTML too hostile for a real parser)."""
    text = _TAG_RE.sub(" ", html)  # [^<>]: an unclosed "<" costs one step, not a scan to the end
    return " ".join(html_lib.unescape(text).split())


# HTML that would make sanitising and text extraction take minutes: both libraries are quadratic
# in how deep tags nest (html5ever) and in the attributes of one tag (libxml2). Mail has neither
# beyond a few dozen; a body past these is shown as its text instead.
MAX_HTML_DEPTH = 500
MAX_HTML_ATTRIBUTES = 200
_TAG_RE = re.compile(r"<[^<>]*>")
_TAG_PARTS_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)([^<>]*)>")
# Tags that never nest: void, or closed by the next of their kind (what sloppy HTML leaves open).
_NOT_NESTING = frozenset("area base br col embed hr img input link meta param source track wbr "
                         "p li dt dd tr td th option thead tbody tfoot colgroup".split())


def html_too_complex(html: str) -> str | None:
    """Why an HTML body is too hostile to hand to the sanitiser and the text extractor, or None.
    One linear scan over the tags."""
    depth = deepest = 0
    for closing, name, attributes in _TAG_PARTS_RE.findall(html):
        if attributes.count("=") > MAX_HTML_ATTRIBUTES:
            return f"has a tag with more than {MAX_HTML_ATTRIBUTES} attributes"
        if name.lower() in _NOT_NESTING:
            continue
        if closing:
            depth = max(depth - 1, 0)
        elif not attributes.rstrip().endswith("/"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_HTML_DEPTH:
                    return f"nests tags more than {MAX_HTML_DEPTH} deep"
    return None

"""What an HTML body says: its text (for HTML-only mail and derived text parts) and the
images it shows by `cid:`. Used by the parser, the template renderer and the ticket pages."""
from __future__ import annotations

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
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
        text = re.sub(r"(?s)<[^>]*>", " ", text)
        import html as html_lib

        return " ".join(html_lib.unescape(text).split())

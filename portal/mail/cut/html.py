"""HTML: render the tree to lines that remember where in it they came from, and truncate the tree
at a line. lxml is imported only when there is HTML to cut."""

from __future__ import annotations

import re

from portal.mail.cut.lines import Line

_BLOCK = frozenset(
    "address article aside blockquote body center dd div dl dt fieldset figcaption figure footer "
    "form h1 h2 h3 h4 h5 h6 header html li main nav ol p pre section table tbody thead tfoot tr "
    "ul caption".split())
_SKIP = frozenset("head style script title meta link template noscript xml".split())
_SPLIT_IDS = ("divrplyfwdmsg", "appendonsend", "olk_src_body_section", "yahoo_quoted",
              "mail-editor-reference-message-container", "zwchr", "stopspelling")
_SPLIT_CLASSES = ("gmail_quote", "gmail_quote_container", "yahoo_quoted", "olk_src_body_section",
                  "protonmail_quote", "zmail_extra", "moz-forward-container")
_SIG_IDS = ("signature", "zm-_id_-sgn")
_SIG_CLASSES = ("gmail_signature", "moz-signature", "signature")
_WS_RE = re.compile(r"\s+")


def _struct_of(el, tag: str) -> str | None:
    ident = (el.get("id") or "").lower()
    classes = (el.get("class") or "").lower().split()
    if tag == "blockquote":
        return None
    if ident.startswith("x_"):
        ident = ident[2:]
    if any(ident.startswith(s) for s in _SPLIT_IDS):
        return "split"
    if any(c.endswith(s) for c in classes for s in _SPLIT_CLASSES):
        return "split"
    if ident in _SIG_IDS or any(c.endswith(s) for c in classes for s in _SIG_CLASSES) \
            or el.get("data-signatureblock") == "true":
        return "sig"
    style = (el.get("style") or "").lower().replace(" ", "")
    if tag == "div" and "border-top" in style and "solid" in style:
        return "border"
    return None


class _Renderer:
    def __init__(self):
        self.lines: list[Line] = []
        self.cur = Line("")
        self.parts: list[str] = []
        self.length = 0
        self.anchor = None
        self.quote_depth = 0
        self.pre_depth = 0
        self.pending: str | None = None

    def _finish(self, force: bool = False) -> None:
        if self.length or force:
            self.cur.text = "".join(self.parts).rstrip()
            # "&gt; " lines: plain-text quoting inside HTML (Hotmail, converted replies)
            self.cur.quoted = self.cur.quoted or self.cur.text.startswith(">")
            if self.cur.anchor is None:
                self.cur.anchor = self.anchor
            self.lines.append(self.cur)
            self.cur = Line("")
            self.parts = []
            self.length = 0
            self.anchor = None

    def brk(self, anchor, hard: bool = False) -> None:
        self._finish(force=hard)
        if self.anchor is None:
            self.anchor = anchor

    def text(self, raw: str | None, node, kind: str) -> None:
        if not raw:
            return
        if not self.pre_depth:
            self._piece(raw, node, kind, 0)
            return
        # <pre>: every newline is a line of its own (plain text wrapped in HTML)
        base = 0
        for k, piece in enumerate(raw.split("\n")):
            if k:
                self.brk((kind, node, base), hard=True)
            self._piece(piece, node, kind, base)
            base += len(piece) + 1

    def _piece(self, raw: str, node, kind: str, base: int) -> None:
        if not raw:
            return
        t = _WS_RE.sub(" ", raw.replace("\xa0", " "))
        if not self.length:
            t = t.lstrip()
            if not t:
                return
            lead = len(raw) - len(raw.lstrip(" \t\r\n\xa0"))
            if self.anchor is None:
                self.anchor = (kind, node, base + lead)
            self.cur.anchor = self.anchor
            self.cur.quoted = self.quote_depth > 0
            if self.pending:
                self.cur.struct, self.pending = self.pending, None
        elif not t.strip() and self.parts and self.parts[-1].endswith(" "):
            return
        if self.cur.segments is None:
            self.cur.segments = []
        self.cur.segments.append((self.length, node, kind, raw, base))
        self.parts.append(t)
        self.length += len(t)

    def hr(self, el, struct: str | None) -> None:
        self._finish()
        self.lines.append(Line("", struct=struct or "hr", anchor=self.anchor or ("before", el, 0)))
        self.anchor = None

    def walk(self, root) -> None:
        stack = [(root, False)]
        while stack:
            el, done = stack.pop()
            if done:
                tag = el.tag.lower() if isinstance(el.tag, str) else ""
                if tag == "blockquote":
                    self.quote_depth -= 1
                elif tag in ("pre", "plaintext", "xmp"):
                    self.pre_depth -= 1
                if tag in _BLOCK:
                    self.brk(("tail", el, 0))
                self.text(el.tail, el, "tail")
                continue
            if not isinstance(el.tag, str):
                self.text(el.tail, el, "tail")
                continue
            tag = el.tag.lower()
            if tag in _SKIP:
                self.text(el.tail, el, "tail")
                continue
            struct = _struct_of(el, tag)
            if tag == "br":
                self.brk(("before", el, 0), hard=True)
                self.text(el.tail, el, "tail")
                continue
            if tag == "hr":
                self.hr(el, "split" if struct == "split" else None)
                self.text(el.tail, el, "tail")
                continue
            if tag in _BLOCK or struct:
                self.brk(("before", el, 0))
            elif tag in ("td", "th") and self.length:
                self.parts.append(" ")
                self.length += 1
            if struct:
                self.pending = struct
                if self.anchor is None:
                    self.anchor = ("before", el, 0)
            if tag == "blockquote":
                self.quote_depth += 1
            elif tag in ("pre", "plaintext", "xmp"):
                self.pre_depth += 1
            self.text(el.text, el, "text")
            stack.append((el, True))
            for child in reversed(el):
                stack.append((child, False))
        self._finish()


def _raw_offset(raw: str, ncol: int, started: bool) -> int:
    """Offset in `raw` of normalised column `ncol` (whitespace collapsed, maybe lstripped)."""
    n = 0
    i = 0
    if not started:
        while i < len(raw) and raw[i] in " \t\r\n\xa0":
            i += 1
    prev_space = False
    while i < len(raw):
        ch = raw[i]
        if ch in " \t\r\n\xa0" or ch.isspace():
            if not prev_space:
                if n >= ncol:
                    return i
                n += 1
            prev_space = True
        else:
            if n >= ncol:
                return i
            n += 1
            prev_space = False
        i += 1
    return len(raw)


def html_anchor(line: Line, col: int):
    if col <= 0 or not line.segments:
        return line.anchor
    for start, node, kind, raw, base in reversed(line.segments):
        if start <= col:
            return (kind, node, base + _raw_offset(raw, col - start, start > 0))
    return line.anchor


def truncate(anchor) -> bool:
    kind, el, off = anchor
    parent = el.getparent()
    if kind == "before":
        if parent is None:
            return False
        for sib in list(el.itersiblings()):
            parent.remove(sib)
        parent.remove(el)  # its tail goes with it
        node = parent
    else:
        if kind == "text":
            el.text = (el.text or "")[:off]
            for child in list(el):
                el.remove(child)
        else:
            el.tail = (el.tail or "")[:off]
        if parent is not None:
            for sib in list(el.itersiblings()):
                parent.remove(sib)
        if kind == "text":
            el.tail = None
        node = parent
    while node is not None:
        up = node.getparent()
        if up is not None:
            for sib in list(node.itersiblings()):
                up.remove(sib)
        node.tail = None
        node = up
    return True


_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)


def parse_html(html: str):
    import lxml.html  # lazy: plain-text callers never pay for it

    try:
        return lxml.html.document_fromstring(_XML_DECL_RE.sub("", html))
    except Exception:  # lxml raises several types on empty/garbage input
        return None


def render_lines(doc) -> list[Line]:
    r = _Renderer()
    r.walk(doc)
    return r.lines

"""Cut an inbound body down to what the sender newly wrote.

`cut_body(text, html, waterlines=..., marker=...)` returns the visible part of a message: it is cut
at the client's waterline text(s), at our own reply-above-this-line marker, at quoted history
("On … wrote:", Outlook header blocks, `>` quoting, HTML quote containers) and at signatures
(`-- `, mobile footers). The cut is always a suffix: everything from the cut point down goes, so
text the sender wrote BELOW a quote (bottom-posting, inline answers) is never lost.

Both forms are cut by one engine: HTML is rendered into lines that remember where in the tree
they came from, the same rules pick a line, and the tree is truncated at that line's source.
The caller keeps the full body; this package only decides what to show. Pure Python + lxml.

Here: `cut_body` and the engine that picks the cut line. The pieces it uses: `lines.py` (the lines
both forms are read as, and the waterline search), `quotes.py` (quote headers and `>` quoting),
`signatures.py`, `html.py` (HTML to lines and back) and `phrases.py` (the multilingual tables).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from portal.mail.cut.html import html_anchor, parse_html, render_lines, truncate
from portal.mail.cut.lines import Line, blank, find_waterline, has_content, norm, text_lines
from portal.mail.cut.quotes import Scanner, header_above, join_broken_quotes, looks_forwarded
from portal.mail.cut.signatures import signature_start

__all__ = ["CutBody", "cut_body"]

WATERLINE, MARKER, QUOTE, SIGNATURE = "waterline", "marker", "quote", "signature"


@dataclass
class CutBody:
    text: str  # visible text: what the sender newly wrote
    html: str | None  # the HTML cut consistently at the same place, or None when no html was given
    cut_at: str | None  # why it was cut: "waterline", "marker", "quote", "signature", or None


_SEPARATOR_RE = re.compile(r"^[\s>]*(?:[-_=*~]\s?){5,}\s*$")


# --------------------------------------------------------------------------------------------
# The engine.

def _find_cut(lines: Sequence[Line], needles: Sequence[tuple[str, str]]):
    """(line, col, reason) where the visible part ends, or None to keep everything."""
    n = len(lines)
    join_broken_quotes(lines)
    scan = Scanner(lines)
    water = find_waterline(lines, needles)
    limit = water[0] if water else n

    hard = None  # (line, col, reason) from a quote header nothing is written below
    protected = False  # a forwarded message: the request itself, keep it whole
    for i in range(limit):
        sp = scan.split_at(i)
        if sp is None:
            continue
        if sp.kind == "forward":
            protected = True
            break
        if sp.kind in ("attrib", "split"):
            nxt = scan.next_nonblank(sp.end + 1)
            if nxt is not None and lines[nxt].quoted:
                # attribution of a quote: the sender may answer inline below it, so the quote
                # is peeled off from the bottom up instead
                continue
        if sp.kind in ("attrib", "header", "original", "split") and looks_forwarded(lines, i, sp.col):
            protected = True
            break
        hard = sp
        break

    if water is not None:
        w_line, w_col, w_reason = water
        if hard is None:
            # an attribution right above a quoted waterline belongs to the cut
            top = header_above(lines, scan, w_line) if w_col == 0 else None
            cut = (top[0], top[1], w_reason) if top is not None else water
        else:
            # the quote header above the waterline is where the cut starts; the waterline is
            # still the reason when it follows the header closely (our own quoted mail)
            between = sum(1 for ln in lines[hard.end + 1:w_line] if ln.content)
            cut = (hard.start, hard.col, w_reason if between <= 3 else QUOTE)
        end, col, reason = cut
    elif hard is not None:
        end, col, reason = hard.start, hard.col, QUOTE
    elif protected:
        return None
    else:
        end, col, reason = n, 0, None

    if col:
        if not has_content(lines, end, col):
            return None
        return end, col, reason

    if not protected:
        end, col, reason = _strip_tail(lines, scan, end, reason)
        if col:
            return (end, col, reason) if has_content(lines, end, col) else None
    end = _include_separator(lines, end)
    if reason is None or end >= n:
        return None
    if not has_content(lines, end):
        return None
    return end, 0, reason


def _strip_tail(lines: Sequence[Line], scan: Scanner, end: int, reason: str | None):
    """Peel trailing quotes, their attribution and signatures off the bottom."""
    quote_done = False
    for _ in range(8):  # reply, signature, quote, its signature …: a few layers, never a loop
        last = end - 1
        while last >= 0 and blank(lines[last]):
            last -= 1
        if last < 0:
            return end, 0, reason
        if lines[last].quoted and not quote_done:
            k = last
            count = 0
            while k > 0 and (lines[k - 1].quoted or blank(lines[k - 1])):
                k -= 1
            count = sum(1 for x in range(k, last + 1) if lines[x].quoted)
            top = header_above(lines, scan, k)
            html_quote = lines[last].anchor is not None
            if top is not None:
                if top[1]:
                    return top[0], top[1], QUOTE
                end, reason, quote_done = top[0], QUOTE, True
                continue
            if count >= 3 or html_quote:
                end, reason = k, QUOTE
                continue
            return end, 0, reason
        sig = signature_start(lines, last + 1)
        if sig is not None and has_content(lines, sig):
            end, reason = sig, SIGNATURE
            continue
        top = header_above(lines, scan, last + 1)
        if top is not None and not quote_done:
            if top[1]:
                return top[0], top[1], QUOTE
            end, reason, quote_done = top[0], QUOTE, True
            continue
        return (last + 1 if reason else end), 0, reason
    return end, 0, reason


def _include_separator(lines: Sequence[Line], end: int) -> int:
    """A rule line or <hr> just above the cut belongs to the quoted part."""
    j = end - 1
    while j >= 0 and blank(lines[j]) and lines[j].struct != "hr":
        j -= 1
    if j >= 0 and (lines[j].struct == "hr" or _SEPARATOR_RE.match(lines[j].text)):
        end = j
        while end > 0 and blank(lines[end - 1]) and lines[end - 1].struct != "hr":
            end -= 1
        return end
    return j + 1 if j + 1 < end else end


def _shown(line: Line) -> str:
    # HTML quotes carry no '>' of their own; give them one so the text still reads as a quote
    if line.quoted and line.anchor is not None and line.text and not line.text.startswith(">"):
        return "> " + line.text
    return line.text


def _join(lines: Sequence[Line], end: int, col: int = 0) -> str:
    out = [_shown(ln) for ln in lines[:end]]
    if col and end < len(lines):
        out.append(lines[end].text[:col].rstrip(" \t-"))
    return _tidy("\n".join(out))


def _tidy(s: str) -> str:
    """Drop leading blank lines and trailing whitespace; keep the first line's indentation."""
    s = s.rstrip()
    start = 0
    while True:
        nl = s.find("\n", start)
        if nl < 0 or s[start:nl].strip():
            return s[start:]
        start = nl + 1


def _align(src: Sequence[Line], cut: tuple[int, int, str], dst: Sequence[Line]):
    """Where in `dst` the part cut away from `src` begins (same words), or None."""
    end, col, reason = cut
    first = src[end].text[col:] if col else src[end].text
    rest = [first] + [ln.text for ln in src[end + 1:end + 6]]
    probe = " ".join(n for n in map(norm, rest) if n)[:60].strip()
    if len(probe) < 8:
        return None
    hit = find_waterline(dst, [(probe, reason)])
    if hit is None:
        return None
    line, hcol, _ = hit
    if not has_content(dst, line, hcol):
        return None
    return line, hcol, reason


# --------------------------------------------------------------------------------------------

def cut_body(text: str, html: str | None = None, *, waterlines: Sequence[str] = (),
             marker: str | None = None) -> CutBody:
    """Cut `text` (and `html`, consistently) to what the sender newly wrote."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    needles = [(norm(marker), MARKER)] if marker else []
    needles += [(norm(w), WATERLINE) for w in waterlines if w and w.strip()]

    t_lines = text_lines(text)
    t_cut = _find_cut(t_lines, needles) if text.strip() else None

    if html is None:
        return CutBody(_join(t_lines, *t_cut[:2]) if t_cut else _tidy(text), None,
                       t_cut[2] if t_cut else None)

    doc = parse_html(html) if html.strip() else None
    if doc is None:
        return CutBody(_join(t_lines, *t_cut[:2]) if t_cut else _tidy(text), html,
                       t_cut[2] if t_cut else None)
    h_lines = render_lines(doc)
    h_cut = _find_cut(h_lines, needles)

    if text.strip():
        if t_cut and not h_cut:
            h_cut = _align(t_lines, t_cut, h_lines)
        elif h_cut and not t_cut:
            t_cut = _align(h_lines, h_cut, t_lines)

    new_html = html
    if h_cut is not None:
        line, col, _ = h_cut
        anchor = html_anchor(h_lines[line], col)
        if anchor is not None and truncate(anchor):
            import lxml.html

            new_html = lxml.html.tostring(doc, encoding="unicode")
        else:
            h_cut = None

    if text.strip():
        visible = _join(t_lines, *t_cut[:2]) if t_cut else _tidy(text)
        reason = t_cut[2] if t_cut else (h_cut[2] if h_cut else None)
    else:
        visible = _join(h_lines, *h_cut[:2]) if h_cut else _join(h_lines, len(h_lines))
        reason = h_cut[2] if h_cut else None
    return CutBody(visible, new_html, reason)

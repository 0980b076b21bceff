"""Lines: the common currency of the text and the HTML form, and the waterline search over them."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

_QUOTE_PREFIX_RE = re.compile(r"^[\s>]*")


@dataclass(slots=True)
class Line:
    text: str
    quoted: bool = False
    struct: str | None = None  # HTML hint: "split", "border", "sig", "hr"
    anchor: tuple | None = None  # HTML: where this line starts in the tree
    segments: list | None = None  # HTML: (col, node, kind, raw, offset of raw) pieces

    @property
    def content(self) -> str:
        """The line without quote prefix and surrounding whitespace."""
        return "" if self.struct == "hr" else _QUOTE_PREFIX_RE.sub("", self.text).strip()


def text_lines(text: str) -> list[Line]:
    return [Line(t, quoted=t.lstrip().startswith(">")) for t in text.split("\n")]


def blank(line: Line) -> bool:
    return not line.text.strip()


def has_content(lines: Sequence[Line], upto: int, col: int = 0) -> bool:
    for i in range(min(upto, len(lines))):
        if any(ch.isalnum() for ch in lines[i].content):
            return True
    if col and upto < len(lines):
        return any(ch.isalnum() for ch in _QUOTE_PREFIX_RE.sub("", lines[upto].text[:col]))
    return False


# --------------------------------------------------------------------------------------------
# Waterlines: case- and whitespace-insensitive, across re-wrapped lines and quote prefixes.

def norm(s: str) -> str:
    return " ".join(_QUOTE_PREFIX_RE.sub("", s).split()).casefold()


def _norm_col(raw: str, ncol: int) -> int:
    """Column in `raw` of the character at `ncol` in `norm(raw)`."""
    i = _QUOTE_PREFIX_RE.match(raw).end()
    n = 0
    pending_space = False
    started = False
    while i < len(raw):
        ch = raw[i]
        if ch.isspace():
            pending_space = started
        else:
            if pending_space:
                if n >= ncol:
                    return i
                n += 1
                pending_space = False
            if n >= ncol:
                return i
            n += len(ch.casefold())
            started = True
        i += 1
    return len(raw)


def find_waterline(lines: Sequence[Line], needles: Sequence[tuple[str, str]]):
    """Earliest (line, col, reason) where one of the normalised needles starts."""
    needles = [(n, r) for n, r in needles if n]
    if not needles:
        return None
    starts, parts, idx = [], [], []
    pos = 0
    for i, line in enumerate(lines):
        n = norm(line.text)
        if not n:
            continue
        starts.append(pos)
        parts.append(n)
        idx.append(i)
        pos += len(n) + 1
    flat = " ".join(parts)
    best = None
    for needle, reason in needles:
        at = flat.find(needle)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, reason)
    if best is None:
        return None
    k = bisect.bisect_right(starts, best[0]) - 1
    line_no = idx[k]
    col = _norm_col(lines[line_no].text, best[0] - starts[k])
    if not _QUOTE_PREFIX_RE.sub("", lines[line_no].text[:col]).strip():
        col = 0
    return line_no, col, best[1]

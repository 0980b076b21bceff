"""Quote headers ("splitters"): attribution lines ("On … wrote:"), Outlook header blocks, "Original
message" and forward lines, and the `>` quoting below them.

Every pattern below is applied to one line or to a window of at most a few short lines (capped by
_MAX_HEADER), so none can run away on pathological input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from portal.mail.cut import phrases as P
from portal.mail.cut.lines import Line, blank

_MAX_HEADER = 400  # an attribution or header line longer than this is prose
_WINDOW = 5  # attribution headers wrap over at most this many lines
_NOT_LETTER_BEFORE = r"(?<![A-Za-zÀ-ÖØ-öø-ÿ])"
_VERB = rf"{_NOT_LETTER_BEFORE}(?:{P.alt(P.ATTRIBUTION_VERBS)})"
_OPENER = rf"(?:{P.alt(P.ATTRIBUTION_OPENERS)})"

# "On <date>, <who> wrote:" (also wrapped; the verb may be followed by nothing or dashes).
_ATTR_OPENER_RE = re.compile(
    rf"^[\s\-_*]*{_OPENER}\s.{{0,300}}?{_VERB}\s*[:：]?[\s\-_*]*$", re.I | re.S)
_OPENER_START_RE = re.compile(rf"[\s\-_*]*{_OPENER}\s", re.I)
# one-letter openers ("в") are too common inside a line to start a header there
_OPENER_INSIDE_RE = re.compile(
    rf"(?:^|[\s\-])(?=(?:{P.alt([o for o in P.ATTRIBUTION_OPENERS if len(o) > 1])})\s)", re.I)
_ATTR_OPENER_MID_RE = re.compile(
    rf"^[\s\-_*]*{_OPENER}\s.{{0,200}}?{_VERB}\s.{{0,200}}?[:：]\s*$", re.I | re.S)
# "<anything with an address or a date> wrote:" (Samsung, Yahoo, localized clients).
_ATTR_GENERIC_RE = re.compile(rf"^.{{0,300}}?{_VERB}\s*[:：]\s*$", re.I | re.S)
# "---- John Smith wrote ----" (Android) and "------On <date>, X wrote-----".
_ATTR_DASHED_RE = re.compile(rf"^\s*-{{2,}}.{{1,300}}?{_VERB}\s*[:：]?\s*-{{2,}}\s*$", re.I | re.S)
# "2014-10-17 11:28 GMT+03:00 Postmaster <x@y>:" / "Thu, 26 Jun 2014 14:00 от X <x@y>:" / Japanese.
_DATE_START_RE = re.compile(
    r"^\s*(?:\d{1,4}[-/.年]\s?\d{1,2}[-/.月]\s?\d{1,4}"
    r"|(?:mon|tue|wed|thu|fri|sat|sun|mo|di|mi|do|fr|sa|so|lun|mar|mer|jeu|ven|sam|dim|"
    r"пн|вт|ср|чт|пт|сб|вс)[a-zа-я.]*,?\s+\d{1,2}\.?\s+\S+\s+\d{2,4})", re.I)
_DATE_END_RE = re.compile(r"(?:>\s*[:：]?|[:：])\s*$")
_TIME_RE = re.compile(r"\d{1,2}[:.h]\d{2}")
_VERB_END_RE = re.compile(rf"{_VERB}\s*[:：]?[\s\-_*]*$", re.I)
# The search above tries every position of a line's tail, and most lines cannot match: a match
# needs a verb's last letter right before the colon, dashes and spaces at the end. These are the
# ASCII characters that can be that letter under re.I (an ASCII "I" matches the "ı" of "yazdı").
_VERB_LAST_RE = re.compile("[" + re.escape("".join({v[-1] for v in P.ATTRIBUTION_VERBS})) + "]", re.I)
_VERB_LAST_ASCII = frozenset(c for c in map(chr, range(128)) if _VERB_LAST_RE.fullmatch(c))
_ASCII_SPACE = " \t\n\r\f\v\x1c\x1d\x1e\x1f"  # what \s matches in ASCII


def _ends_with_verb(s: str) -> bool:
    core = s.rstrip(_ASCII_SPACE + "-_*")
    if core[-1:] in (":", "："):
        core = core[:-1].rstrip(_ASCII_SPACE)
    last = core[-1:]
    if last.isascii() and last not in _VERB_LAST_ASCII:
        return False  # not even a verb's last letter before the end: the search cannot match
    return _VERB_END_RE.search(s[-80:]) is not None

_HEADER_KEY_RE = re.compile(
    rf"^[\s*_]*(?P<key>{P.alt(P.HEADER_FROM + P.HEADER_DATE + P.HEADER_OTHER)})[\s*_]*[:：]", re.I)
# Several keys on one rendered line ("<b>From: x</b> <b>Date: y</b>"); one- and two-letter keys
# ("A:", "An:") are too common in prose to count there.
_INLINE_KEY_RE = re.compile(
    rf"(?<![\w-])({P.alt([k for k in P.HEADER_FROM + P.HEADER_DATE + P.HEADER_OTHER if len(k) > 2])})\s?[:：]",
    re.I)
_HEADER_DATES = frozenset(P.HEADER_DATE)
_HEADER_FIRST = frozenset(P.HEADER_FROM + P.HEADER_DATE)
_ORIGINAL_RE = re.compile(rf"^[\s*_]*-{{2,}}\s*(?:{P.alt(P.ORIGINAL_MESSAGE)})\s*-{{2,}}[\s*_]*$", re.I)
_FORWARD_RE = re.compile(
    rf"^[\s*_]*(?:-{{2,}}\s*(?:{P.alt(P.FORWARD_DASHED)})\s*-{{2,}}"
    rf"|(?:{P.alt(P.FORWARD_LINES)})\s*[:：]?)[\s*_]*$", re.I)
_FORWARD_HINT_RE = re.compile(rf"{_NOT_LETTER_BEFORE}(?:{P.alt(P.FORWARD_HINTS)})(?![a-zà-ÿ])", re.I)


@dataclass
class _Split:
    start: int
    end: int  # last line of the header
    col: int  # where on the first line it starts (a reply may share the line)
    kind: str  # "attrib", "header", "original", "forward", "split"


class Scanner:
    """Finds quote headers; per-line facts are computed once so scans stay linear."""

    def __init__(self, lines: Sequence[Line]):
        self.lines = lines
        self.n = len(lines)
        self._verb_end: list[bool] = []
        for line in lines:
            s = line.text.rstrip()
            self._verb_end.append(bool(s) and _ends_with_verb(s))
        self._cache: dict[int, _Split | None] = {}
        self._keys: dict[int, tuple[str, set[str]] | None] = {}

    def header_keys(self, i: int) -> tuple[str, set[str]] | None:
        """(first key, all keys) of a header-looking line, computed once per line."""
        if i not in self._keys:
            s = self.lines[i].text.strip()[:_MAX_HEADER]
            m = _HEADER_KEY_RE.match(s)
            if m:
                key = m.group("key").lower()
                self._keys[i] = (key, {key, *(k.lower() for k in _INLINE_KEY_RE.findall(s[m.end():]))})
            else:
                self._keys[i] = None
        return self._keys[i]

    def split_at(self, i: int) -> _Split | None:
        if i not in self._cache:
            self._cache[i] = self._detect(i)
        return self._cache[i]

    def _detect(self, i: int) -> _Split | None:
        line = self.lines[i]
        if line.quoted or line.struct == "hr":
            return None
        s = line.text.strip()
        if line.struct == "split":
            return _Split(i, i, 0, "forward" if _FORWARD_RE.match(s) else "split")
        if not s:
            return None
        if len(s) <= 200:
            if _FORWARD_RE.match(s):
                return _Split(i, i, 0, "forward")
            if _ORIGINAL_RE.match(s):
                return _Split(i, i, 0, "original")
        if len(s) <= _MAX_HEADER:
            header = self._header_block(i)
            if header is not None:
                return header
            if line.struct == "border":
                return None
        return self._attribution(i)

    def _header_block(self, i: int) -> _Split | None:
        first = self.header_keys(i)
        if first is None or first[0] not in _HEADER_FIRST:
            return None
        keys = set(first[1])
        end = i
        j = i + 1
        while j < self.n and j <= i + 10:
            line = self.lines[j]
            if blank(line) or line.quoted:
                break
            km = self.header_keys(j)
            if km:
                keys |= km[1]
                end = j
            elif len(line.text) > 200:
                break
            j += 1
        # every real quoted header has a date ("Sent:", "Date:", …); "From: 10am / To: 2pm" or
        # "From: info@ / To: bob@" in a request has none
        if not keys & _HEADER_DATES or len(keys) < 2:
            return None
        block = " ".join(self.lines[k].text[:_MAX_HEADER] for k in range(i, end + 1))
        if len(keys) >= 3 or "@" in block or "mailto" in block.lower():
            return _Split(i, end, 0, "header")
        return None

    def _attribution(self, i: int) -> _Split | None:
        last = min(self.n, i + _WINDOW)
        if not any(self._verb_end[i:last]) and not _DATE_START_RE.match(self.lines[i].text[:100]) \
                and not (_OPENER_START_RE.match(self.lines[i].text[:40])
                         and any(ln.text.rstrip().endswith((":", "：")) for ln in self.lines[i:last])):
            return None
        first = self.lines[i].text
        offsets = [0]
        starts_with_opener = _OPENER_START_RE.match(first[:40])
        dated = first.lstrip()[:1].isdigit()  # "8 янв. 2024 г., в 10:02, X написал:" starts a header
        if not starts_with_opener and not dated and (self._verb_end[i] or any(self._verb_end[i + 1:last])):
            # "reply On <date>, X wrote:": the reply shares the line with the header
            tail_from = max(0, len(first) - _MAX_HEADER)
            mids = [tail_from + m.end() for m in _OPENER_INSIDE_RE.finditer(first[tail_from:])]
            offsets = [c for c in mids if c > 0][:3] + offsets
        for col in offsets:
            joined = first[col:].strip()
            if len(joined) > _MAX_HEADER:
                continue
            opener = bool(_OPENER_START_RE.match(joined[:40]))
            # a wrapped header without an opener word starts with its address or date
            wrapped_ok = opener or any(c in joined for c in "<@\"") or joined[:1].isdigit()
            for j in range(i, last):
                if j > i:
                    nxt = self.lines[j]
                    t = nxt.text.strip()
                    # another opener starts a new header; a long line is body text; only the
                    # "On <date> <name>\n\n<mailto:…> wrote:" form (Polymail) spans a blank line
                    if len(t) > 200 or (t and _ATTR_OPENER_RE.match(t)) or nxt.struct == "split":
                        break
                    if not wrapped_ok or (not t and not opener):
                        break
                    joined = f"{joined} {t}" if t else joined
                    if len(joined) > _MAX_HEADER:
                        break
                if self._is_attribution(joined, col == 0, j - i + 1):
                    return _Split(i, j, col, "attrib")
        return None

    @staticmethod
    def _is_attribution(s: str, at_line_start: bool, nlines: int) -> bool:
        if not s.endswith((":", "：", "-", ">")) and not _VERB_END_RE.search(s[-40:]):
            return False
        # mail clients write a time or an address; "On 5 Jan I sent:" in a request has neither
        dated = "@" in s or _TIME_RE.search(s) is not None
        if _ATTR_OPENER_RE.match(s):
            return dated
        if _ATTR_OPENER_MID_RE.match(s):
            # "Op <date> schreef X <x@y>:" — the verb sits before the name
            return dated and ("@" in s or "<" in s or "(" in s)
        if not at_line_start:
            return False
        if _ATTR_DASHED_RE.match(s):
            return True
        if _ATTR_GENERIC_RE.match(s) and len(s) <= 300:
            return "@" in s or s[:1].isdigit()
        if nlines <= 3 and _DATE_START_RE.match(s) and "@" in s and _DATE_END_RE.search(s):
            return len(s) <= 250
        return False

    def next_nonblank(self, i: int) -> int | None:
        for j in range(i, self.n):
            if not blank(self.lines[j]):
                return j
        return None


_LINK_BIT_RE = re.compile(r"^\s*(?:\(?\s*(?:https?://|www\.)\S*\)?\s*>?|[\w=&%./?#-]{1,80}\)?\s*>?)\s*$", re.I)


def join_broken_quotes(lines: Sequence[Line]) -> None:
    """A wrapped link inside a '>' quote leaves a bare line between quoted ones; it is quoted too."""
    for i in range(1, len(lines) - 1):
        line = lines[i]
        if line.quoted or line.anchor is not None or not lines[i - 1].quoted:
            continue
        if not lines[i + 1].quoted or len(line.text) > 120 or not line.text.strip():
            continue
        if _LINK_BIT_RE.match(line.text):
            line.quoted = True


def looks_forwarded(lines: Sequence[Line], i: int, col: int) -> bool:
    """Nothing (or only "FYI, see below") above a header block: the quoted part is the request."""
    above = [ln.content for ln in lines[:i] if ln.content]
    if col:
        above.append(lines[i].text[:col].strip())
    above = [a for a in above if a]
    if not above:
        return True
    text = " ".join(above)
    return len(above) <= 3 and len(text) <= 200 and bool(_FORWARD_HINT_RE.search(text))


def header_above(lines: Sequence[Line], scan: Scanner, at: int) -> tuple[int, int] | None:
    """(line, col) of a quote header that ends right above line `at`."""
    j = at - 1
    while j >= 0 and (blank(lines[j]) or (lines[j].quoted and not lines[j].content)):
        j -= 1
    for start in range(max(0, j - _WINDOW), j + 1):
        sp = scan.split_at(start)
        if sp is not None and sp.end == j and sp.kind != "forward":
            return start, sp.col
    return None

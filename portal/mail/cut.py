"""Cut an inbound body down to what the sender newly wrote.

`cut_body(text, html, waterlines=..., marker=...)` returns the visible part of a message: it is cut
at the client's waterline text(s), at our own reply-above-this-line marker, at quoted history
("On … wrote:", Outlook header blocks, `>` quoting, HTML quote containers) and at signatures
(`-- `, mobile footers). The cut is always a suffix: everything from the cut point down goes, so
text the sender wrote BELOW a quote (bottom-posting, inline answers) is never lost.

Both forms are cut by one engine: HTML is rendered into lines that remember where in the tree
they came from, the same rules pick a line, and the tree is truncated at that line's source.
The caller keeps the full body; this module only decides what to show. Pure Python + lxml.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from portal.mail import cut_phrases as P

__all__ = ["CutBody", "cut_body"]

WATERLINE, MARKER, QUOTE, SIGNATURE = "waterline", "marker", "quote", "signature"


@dataclass
class CutBody:
    text: str  # visible text: what the sender newly wrote
    html: str | None  # the HTML cut consistently at the same place, or None when no html was given
    cut_at: str | None  # why it was cut: "waterline", "marker", "quote", "signature", or None


# --------------------------------------------------------------------------------------------
# Patterns. Every pattern below is applied to one line or to a window of at most a few short
# lines (capped by _MAX_HEADER), so none can run away on pathological input.

def _alt(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_MAX_HEADER = 400  # an attribution or header line longer than this is prose
_WINDOW = 5  # attribution headers wrap over at most this many lines
_NOT_LETTER_BEFORE = r"(?<![A-Za-zÀ-ÖØ-öø-ÿ])"
_VERB = rf"{_NOT_LETTER_BEFORE}(?:{_alt(P.ATTRIBUTION_VERBS)})"
_OPENER = rf"(?:{_alt(P.ATTRIBUTION_OPENERS)})"

# "On <date>, <who> wrote:" (also wrapped; the verb may be followed by nothing or dashes).
_ATTR_OPENER_RE = re.compile(
    rf"^[\s\-_*]*{_OPENER}\s.{{0,300}}?{_VERB}\s*[:：]?[\s\-_*]*$", re.I | re.S)
_OPENER_START_RE = re.compile(rf"[\s\-_*]*{_OPENER}\s", re.I)
# one-letter openers ("в") are too common inside a line to start a header there
_OPENER_INSIDE_RE = re.compile(
    rf"(?:^|[\s\-])(?=(?:{_alt([o for o in P.ATTRIBUTION_OPENERS if len(o) > 1])})\s)", re.I)
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
    rf"^[\s*_]*(?P<key>{_alt(P.HEADER_FROM + P.HEADER_DATE + P.HEADER_OTHER)})[\s*_]*[:：]", re.I)
# Several keys on one rendered line ("<b>From: x</b> <b>Date: y</b>"); one- and two-letter keys
# ("A:", "An:") are too common in prose to count there.
_INLINE_KEY_RE = re.compile(
    rf"(?<![\w-])({_alt([k for k in P.HEADER_FROM + P.HEADER_DATE + P.HEADER_OTHER if len(k) > 2])})\s?[:：]",
    re.I)
_HEADER_DATES = frozenset(P.HEADER_DATE)
_HEADER_FIRST = frozenset(P.HEADER_FROM + P.HEADER_DATE)
_ORIGINAL_RE = re.compile(rf"^[\s*_]*-{{2,}}\s*(?:{_alt(P.ORIGINAL_MESSAGE)})\s*-{{2,}}[\s*_]*$", re.I)
_FORWARD_RE = re.compile(
    rf"^[\s*_]*(?:-{{2,}}\s*(?:{_alt(P.FORWARD_DASHED)})\s*-{{2,}}"
    rf"|(?:{_alt(P.FORWARD_LINES)})\s*[:：]?)[\s*_]*$", re.I)
_FORWARD_HINT_RE = re.compile(rf"{_NOT_LETTER_BEFORE}(?:{_alt(P.FORWARD_HINTS)})(?![a-zà-ÿ])", re.I)

_SIG_DASH_RE = re.compile(r"^(?:--|---|—|– )\s*$")
_SIG_UNDERSCORE_RE = re.compile(r"^_{2,}\s*$")
_SEPARATOR_RE = re.compile(r"^[\s>]*(?:[-_=*~]\s?){5,}\s*$")
_MOBILE_PREFIX_RE = re.compile(rf"^(?:{_alt(P.MOBILE_PREFIXES)})\b", re.I)
_MOBILE_WORD_RE = re.compile(rf"(?<![a-z])(?:{_alt(P.MOBILE_WORDS)})(?![a-z])", re.I)
_MOBILE_SUFFIX_RE = re.compile(rf"(?:{_alt(P.MOBILE_SUFFIXES)})[.!]?$", re.I)
_QUOTE_PREFIX_RE = re.compile(r"^[\s>]*")
_WORD_RE = re.compile(r"\w+")


# --------------------------------------------------------------------------------------------
# Lines: the common currency of the text and the HTML form.

@dataclass(slots=True)
class _Line:
    text: str
    quoted: bool = False
    struct: str | None = None  # HTML hint: "split", "border", "sig", "hr"
    anchor: tuple | None = None  # HTML: where this line starts in the tree
    segments: list | None = None  # HTML: (col, node, kind, raw, offset of raw) pieces

    @property
    def content(self) -> str:
        """The line without quote prefix and surrounding whitespace."""
        return "" if self.struct == "hr" else _QUOTE_PREFIX_RE.sub("", self.text).strip()


def _text_lines(text: str) -> list[_Line]:
    return [_Line(t, quoted=t.lstrip().startswith(">")) for t in text.split("\n")]


def _blank(line: _Line) -> bool:
    return not line.text.strip()


def _has_content(lines: Sequence[_Line], upto: int, col: int = 0) -> bool:
    for i in range(min(upto, len(lines))):
        if any(ch.isalnum() for ch in lines[i].content):
            return True
    if col and upto < len(lines):
        return any(ch.isalnum() for ch in _QUOTE_PREFIX_RE.sub("", lines[upto].text[:col]))
    return False


# --------------------------------------------------------------------------------------------
# Waterlines: case- and whitespace-insensitive, across re-wrapped lines and quote prefixes.

def _norm(s: str) -> str:
    return " ".join(_QUOTE_PREFIX_RE.sub("", s).split()).casefold()


def _norm_col(raw: str, ncol: int) -> int:
    """Column in `raw` of the character at `ncol` in `_norm(raw)`."""
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


def _find_waterline(lines: Sequence[_Line], needles: Sequence[tuple[str, str]]):
    """Earliest (line, col, reason) where one of the normalised needles starts."""
    needles = [(n, r) for n, r in needles if n]
    if not needles:
        return None
    starts, parts, idx = [], [], []
    pos = 0
    for i, line in enumerate(lines):
        n = _norm(line.text)
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


# --------------------------------------------------------------------------------------------
# Quote headers ("splitters").

@dataclass
class _Split:
    start: int
    end: int  # last line of the header
    col: int  # where on the first line it starts (a reply may share the line)
    kind: str  # "attrib", "header", "original", "forward", "split"


class _Scanner:
    """Finds quote headers; per-line facts are computed once so scans stay linear."""

    def __init__(self, lines: Sequence[_Line]):
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
            if _blank(line) or line.quoted:
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
            if not _blank(self.lines[j]):
                return j
        return None


# --------------------------------------------------------------------------------------------
# Signatures.

def _is_mobile_footer(s: str) -> bool:
    s = s.strip()
    if not s or len(s) > 120:
        return False
    words = len(_WORD_RE.findall(s))
    if _MOBILE_PREFIX_RE.match(s):
        # "Sent from my desk, is much easier …" is a sentence, not a footer
        if "," in s and not _MOBILE_WORD_RE.search(s.split(",")[0]):
            return False
        return words <= 6 or (words <= 16 and bool(_MOBILE_WORD_RE.search(s)))
    return words <= 5 and bool(_MOBILE_SUFFIX_RE.search(s)) and bool(_MOBILE_WORD_RE.search(s))


_SIGNOFF_RE = re.compile(r"^-\s?[A-Z][\w.'’]*(?:\s[A-Z][\w.'’]*){0,2}\s*$")


def _is_dash_signoff(lines: Sequence[_Line], i: int) -> bool:
    """'-Abhishek Kona' alone after a blank line; a '- item' list keeps its last item."""
    s = lines[i].text.strip()
    if len(s) > 30 or not _SIGNOFF_RE.match(s) or i < 2 or not _blank(lines[i - 1]):
        return False
    above = [ln.text.strip() for ln in lines[max(0, i - 4):i - 1]]
    return not any(a.startswith(("-", "*", "•")) for a in above)


def _signature_start(lines: Sequence[_Line], end: int) -> int | None:
    """Start of a signature block that runs to `end` (exclusive), or None."""
    last = end - 1
    while last >= 0 and _blank(lines[last]):
        last -= 1
    if last < 0 or lines[last].quoted:
        return None
    if _is_mobile_footer(lines[last].content):
        return last
    if _is_dash_signoff(lines, last):
        return last
    best = None
    nonblank = 0
    i = last
    while i >= 0 and nonblank <= 30:
        line = lines[i]
        if line.quoted:
            break
        s = line.text.strip()
        if s:
            nonblank += 1
        if line.struct == "sig":
            best = i
        elif _SIG_DASH_RE.match(s) and nonblank <= 21:
            best = i
        elif _SIG_UNDERSCORE_RE.match(s) and nonblank <= 11:
            best = i
        i -= 1
    return best


# --------------------------------------------------------------------------------------------
# The engine.

def _find_cut(lines: Sequence[_Line], needles: Sequence[tuple[str, str]]):
    """(line, col, reason) where the visible part ends, or None to keep everything."""
    n = len(lines)
    _join_broken_quotes(lines)
    scan = _Scanner(lines)
    water = _find_waterline(lines, needles)
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
        if sp.kind in ("attrib", "header", "original", "split") and _looks_forwarded(lines, i, sp.col):
            protected = True
            break
        hard = sp
        break

    if water is not None:
        w_line, w_col, w_reason = water
        if hard is None:
            # an attribution right above a quoted waterline belongs to the cut
            top = _header_above(lines, scan, w_line) if w_col == 0 else None
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
        if not _has_content(lines, end, col):
            return None
        return end, col, reason

    if not protected:
        end, col, reason = _strip_tail(lines, scan, end, reason)
        if col:
            return (end, col, reason) if _has_content(lines, end, col) else None
    end = _include_separator(lines, end)
    if reason is None or end >= n:
        return None
    if not _has_content(lines, end):
        return None
    return end, 0, reason


_LINK_BIT_RE = re.compile(r"^\s*(?:\(?\s*(?:https?://|www\.)\S*\)?\s*>?|[\w=&%./?#-]{1,80}\)?\s*>?)\s*$", re.I)


def _join_broken_quotes(lines: Sequence[_Line]) -> None:
    """A wrapped link inside a '>' quote leaves a bare line between quoted ones; it is quoted too."""
    for i in range(1, len(lines) - 1):
        line = lines[i]
        if line.quoted or line.anchor is not None or not lines[i - 1].quoted:
            continue
        if not lines[i + 1].quoted or len(line.text) > 120 or not line.text.strip():
            continue
        if _LINK_BIT_RE.match(line.text):
            line.quoted = True


def _looks_forwarded(lines: Sequence[_Line], i: int, col: int) -> bool:
    """Nothing (or only "FYI, see below") above a header block: the quoted part is the request."""
    above = [ln.content for ln in lines[:i] if ln.content]
    if col:
        above.append(lines[i].text[:col].strip())
    above = [a for a in above if a]
    if not above:
        return True
    text = " ".join(above)
    return len(above) <= 3 and len(text) <= 200 and bool(_FORWARD_HINT_RE.search(text))


def _header_above(lines: Sequence[_Line], scan: _Scanner, at: int) -> tuple[int, int] | None:
    """(line, col) of a quote header that ends right above line `at`."""
    j = at - 1
    while j >= 0 and (_blank(lines[j]) or (lines[j].quoted and not lines[j].content)):
        j -= 1
    for start in range(max(0, j - _WINDOW), j + 1):
        sp = scan.split_at(start)
        if sp is not None and sp.end == j and sp.kind != "forward":
            return start, sp.col
    return None


def _strip_tail(lines: Sequence[_Line], scan: _Scanner, end: int, reason: str | None):
    """Peel trailing quotes, their attribution and signatures off the bottom."""
    quote_done = False
    for _ in range(8):  # reply, signature, quote, its signature …: a few layers, never a loop
        last = end - 1
        while last >= 0 and _blank(lines[last]):
            last -= 1
        if last < 0:
            return end, 0, reason
        if lines[last].quoted and not quote_done:
            k = last
            count = 0
            while k > 0 and (lines[k - 1].quoted or _blank(lines[k - 1])):
                k -= 1
            count = sum(1 for x in range(k, last + 1) if lines[x].quoted)
            top = _header_above(lines, scan, k)
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
        sig = _signature_start(lines, last + 1)
        if sig is not None and _has_content(lines, sig):
            end, reason = sig, SIGNATURE
            continue
        top = _header_above(lines, scan, last + 1)
        if top is not None and not quote_done:
            if top[1]:
                return top[0], top[1], QUOTE
            end, reason, quote_done = top[0], QUOTE, True
            continue
        return (last + 1 if reason else end), 0, reason
    return end, 0, reason


def _include_separator(lines: Sequence[_Line], end: int) -> int:
    """A rule line or <hr> just above the cut belongs to the quoted part."""
    j = end - 1
    while j >= 0 and _blank(lines[j]) and lines[j].struct != "hr":
        j -= 1
    if j >= 0 and (lines[j].struct == "hr" or _SEPARATOR_RE.match(lines[j].text)):
        end = j
        while end > 0 and _blank(lines[end - 1]) and lines[end - 1].struct != "hr":
            end -= 1
        return end
    return j + 1 if j + 1 < end else end


# --------------------------------------------------------------------------------------------
# HTML: render to lines that remember their source, truncate the tree at a line.

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
        self.lines: list[_Line] = []
        self.cur = _Line("")
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
            self.cur = _Line("")
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
        self.lines.append(_Line("", struct=struct or "hr", anchor=self.anchor or ("before", el, 0)))
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


def _html_anchor(line: _Line, col: int):
    if col <= 0 or not line.segments:
        return line.anchor
    for start, node, kind, raw, base in reversed(line.segments):
        if start <= col:
            return (kind, node, base + _raw_offset(raw, col - start, start > 0))
    return line.anchor


def _truncate(anchor) -> bool:
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


def _parse_html(html: str):
    import lxml.html  # lazy: plain-text callers never pay for it

    try:
        return lxml.html.document_fromstring(_XML_DECL_RE.sub("", html))
    except Exception:  # lxml raises several types on empty/garbage input
        return None


def _render(doc) -> list[_Line]:
    r = _Renderer()
    r.walk(doc)
    return r.lines


def _shown(line: _Line) -> str:
    # HTML quotes carry no '>' of their own; give them one so the text still reads as a quote
    if line.quoted and line.anchor is not None and line.text and not line.text.startswith(">"):
        return "> " + line.text
    return line.text


def _join(lines: Sequence[_Line], end: int, col: int = 0) -> str:
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


def _align(src: Sequence[_Line], cut: tuple[int, int, str], dst: Sequence[_Line]):
    """Where in `dst` the part cut away from `src` begins (same words), or None."""
    end, col, reason = cut
    first = src[end].text[col:] if col else src[end].text
    rest = [first] + [ln.text for ln in src[end + 1:end + 6]]
    probe = " ".join(n for n in map(_norm, rest) if n)[:60].strip()
    if len(probe) < 8:
        return None
    hit = _find_waterline(dst, [(probe, reason)])
    if hit is None:
        return None
    line, hcol, _ = hit
    if not _has_content(dst, line, hcol):
        return None
    return line, hcol, reason


# --------------------------------------------------------------------------------------------

def cut_body(text: str, html: str | None = None, *, waterlines: Sequence[str] = (),
             marker: str | None = None) -> CutBody:
    """Cut `text` (and `html`, consistently) to what the sender newly wrote."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    needles = [(_norm(marker), MARKER)] if marker else []
    needles += [(_norm(w), WATERLINE) for w in waterlines if w and w.strip()]

    t_lines = _text_lines(text)
    t_cut = _find_cut(t_lines, needles) if text.strip() else None

    if html is None:
        return CutBody(_join(t_lines, *t_cut[:2]) if t_cut else _tidy(text), None,
                       t_cut[2] if t_cut else None)

    doc = _parse_html(html) if html.strip() else None
    if doc is None:
        return CutBody(_join(t_lines, *t_cut[:2]) if t_cut else _tidy(text), html,
                       t_cut[2] if t_cut else None)
    h_lines = _render(doc)
    h_cut = _find_cut(h_lines, needles)

    if text.strip():
        if t_cut and not h_cut:
            h_cut = _align(t_lines, t_cut, h_lines)
        elif h_cut and not t_cut:
            t_cut = _align(h_lines, h_cut, t_lines)

    new_html = html
    if h_cut is not None:
        line, col, _ = h_cut
        anchor = _html_anchor(h_lines[line], col)
        if anchor is not None and _truncate(anchor):
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

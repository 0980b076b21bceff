"""Signatures: `-- ` and underscore delimiters, mobile footers ("Sent from my iPhone"), a lone
"-Name" sign-off, and the signature blocks HTML mail marks. Every pattern is applied to one line."""

from __future__ import annotations

import re
from collections.abc import Sequence

from portal.mail.cut import phrases as P
from portal.mail.cut.lines import Line, blank

_SIG_DASH_RE = re.compile(r"^(?:--|---|—|– )\s*$")
_SIG_UNDERSCORE_RE = re.compile(r"^_{2,}\s*$")
_MOBILE_PREFIX_RE = re.compile(rf"^(?:{P.alt(P.MOBILE_PREFIXES)})\b", re.I)
_MOBILE_WORD_RE = re.compile(rf"(?<![a-z])(?:{P.alt(P.MOBILE_WORDS)})(?![a-z])", re.I)
_MOBILE_SUFFIX_RE = re.compile(rf"(?:{P.alt(P.MOBILE_SUFFIXES)})[.!]?$", re.I)
_WORD_RE = re.compile(r"\w+")


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


def _is_dash_signoff(lines: Sequence[Line], i: int) -> bool:
    """'-Abhishek Kona' alone after a blank line; a '- item' list keeps its last item."""
    s = lines[i].text.strip()
    if len(s) > 30 or not _SIGNOFF_RE.match(s) or i < 2 or not blank(lines[i - 1]):
        return False
    above = [ln.text.strip() for ln in lines[max(0, i - 4):i - 1]]
    return not any(a.startswith(("-", "*", "•")) for a in above)


def signature_start(lines: Sequence[Line], end: int) -> int | None:
    """Start of a signature block that runs to `end` (exclusive), or None."""
    last = end - 1
    while last >= 0 and blank(lines[last]):
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

"""The MIME tree of a message, split by searching for its boundary lines.

The stdlib feedparser reads a message one line at a time through Python code and compiles a
regular expression for every boundary it meets: together about half of all parsing time.
split_mime() builds the same compat32 Message tree with string searches. It takes only mail
the feedparser would read without a single defect; for anything else (a lone CR, a header
line that is not one, a missing or repeated boundary, a message/* part, a digest) it returns
None and the feedparser, which knows every repair, reads the message instead.
tests/mail/test_mime.py holds the two trees equal.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message

_COMPAT32 = policy.compat32
_HEADER_START_RE = re.compile(r"[\041-\071\073-\176]+:")
_BLANK_LINE_RE = re.compile(r"\n\r?\n")
_FIELD_START_RE = re.compile(r"\n(?![ \t])")  # a line break not followed by a continuation
_LONE_CR_RE = re.compile(r"\r(?!\n)")
MAX_DEPTH = 50


class _Unusual(Exception):
    """Something the feedparser would note as a defect or treat specially."""


def split_mime(raw: bytes) -> Message | None:
    """The compat32 Message tree of `raw`, or None when the feedparser must read it."""
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser does
    # A lone CR ends a line for the feedparser; an mbox "From " line is its unixfrom.
    if text.startswith("From ") or ("\r" in text and _LONE_CR_RE.search(text)):
        return None
    try:
        return _message(text, 0, len(text), ())
    except Exception:  # noqa: BLE001 - _Unusual, or anything else: the feedparser decides
        return None


# The tree is read by positions in the one decoded text, and each leaf's payload is its only
# copy: slicing every part and body out on the way down made four more copies of a large
# attachment, at the same moment (a 38 MB attachment: 150 MB at the fetch's peak).


def _message(text: str, start: int, end: int, outer: tuple[str, ...], *, part: bool = False) -> Message:
    """The message in text[start:end]; `part`: a part of a multipart, whose payload loses the
    line break before the next boundary (RFC 2046: it belongs to the boundary)."""
    msg = Message(policy=_COMPAT32)
    body = _read_headers(text, start, end, msg)
    maintype = msg.get_content_maintype()
    if maintype == "message":
        raise _Unusual  # parsed as a nested message by the feedparser
    if maintype != "multipart":
        msg.set_payload(text[body:_before_eol(text, body, end) if part else end])
        return msg
    if len(outer) >= MAX_DEPTH or msg.get_content_type() == "multipart/digest":
        raise _Unusual
    boundary = msg.get_boundary()
    if not boundary or str(msg.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary"):
        raise _Unusual
    separator = "--" + boundary
    if separator in outer:
        raise _Unusual
    lines = _boundary_lines(text, separator, body, end)
    if len(lines) < 2 or lines[0][2] or not lines[-1][2]:
        raise _Unusual  # no start, no part, or no close boundary
    if lines[0][0] != body:
        msg.preamble = text[body:_before_eol(text, body, lines[0][0])]
    for (_, part_start, _), (part_end, _, _) in zip(lines, lines[1:]):
        if part_start == part_end:
            raise _Unusual  # two boundary lines in a row
        child = _message(text, part_start, part_end, (*outer, separator), part=True)
        if isinstance(child._payload, list):
            child.epilogue = None if child.epilogue == "" else _without_eol(child.epilogue)
        msg.attach(child)
    msg.epilogue = text[lines[-1][1]:end]
    return msg


def _read_headers(text: str, start: int, end: int, msg: Message) -> int:
    """Set the header block's fields on msg; returns where the body starts, after the blank line."""
    if text.startswith("\n", start, end):
        return start + 1
    if text.startswith("\r\n", start, end):
        return start + 2
    blank = _BLANK_LINE_RE.search(text, start, end)
    if blank is None or text[start] in " \t":
        raise _Unusual  # headers to the end, or a first line that continues nothing
    for field in _FIELD_START_RE.split(text[start:blank.start()]):
        if not _HEADER_START_RE.match(field):
            raise _Unusual
        name, value = field.split(":", 1)
        # compat32's reading of a field: leading blanks of the value and the last line break go.
        msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
    return blank.end()


def _boundary_lines(text: str, separator: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(start, end after its line break, is the close boundary) of each boundary line in
    text[start:end], up to and including the first close boundary. A boundary line is the
    separator at the start of a line, then "--" for the close boundary, then only spaces or tabs."""
    found = []
    at = start
    while (at := text.find(separator, at, end)) >= 0:
        if at > start and text[at - 1] != "\n":
            at += 1
            continue
        eol = text.find("\n", at, end)
        line_end = end if eol < 0 else eol + 1
        rest = text[at + len(separator):line_end].rstrip("\n").removesuffix("\r")
        close = rest.startswith("--")
        if not (rest[2:] if close else rest).strip(" \t"):
            found.append((at, line_end, close))
            if close:
                break
        at = line_end
    return found


def _before_eol(text: str, start: int, end: int) -> int:
    """The end of text[start:end] without its last line break."""
    if end - 2 >= start and text.startswith("\r\n", end - 2, end):
        return end - 2
    if end - 1 >= start and text.startswith("\n", end - 1, end):
        return end - 1
    return end


def _without_eol(value: str) -> str:
    if value.endswith("\r\n"):
        return value[:-2]
    if value.endswith("\n"):
        return value[:-1]
    return value

"""Parse any raw email into one `ParsedEmail`, never raising.

Broken input gives whatever could be read plus `defects` (short strings). The standard
library's `email` package with `policy.default` does the MIME work; this package adds the
helpdesk's needs: charset repair, body choice, attachments with hashes, TNEF, uuencode,
a size limit, and limits on pathological structure. A part the HTML body shows by `cid:` is
inline, whatever its Content-Disposition says.

Here: the entry points (`parse_email`, `parse_file`, `parse_headers`) and the `ParsedEmail` they
return. `headers.py` reads the header block (ids, subject, date, addresses); `parts.py` walks the
MIME tree for the body and the attachments.
"""
from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser

from portal.mail.mime import split_mime
from portal.mail.parse.headers import PARSE_POLICY, Address, read_headers
from portal.mail.parse.parts import Attachment, read_parts
from portal.mail.sanitize import sanitize_html

DEFAULT_MAX_SIZE = 40 * 1024 * 1024
MAX_DEFECTS = 50
# How much of an oversized message we read to find its headers.
HEADER_READ_LIMIT = 1024 * 1024

_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")


@dataclass
class ParsedEmail:
    raw_size: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list, repr=False)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_: Address | None = None
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    # "" for the null reverse path `<>` (bounces), None when absent.
    return_path: str | None = None
    date: datetime | None = None
    content_type: str = "text/plain"
    text: str = ""
    html: str | None = None
    text_from_html: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    headers_only: bool = False
    _html_safe: str | None = field(default=None, repr=False, compare=False)
    # Charset evidence for raw 8-bit headers (body charset, detection over all headers).
    _hint: str | None = field(default=None, repr=False, compare=False)
    _guess: str | None = field(default=None, repr=False, compare=False)
    # Set on a report found inside another report, so that we look only one level deep.
    _nested: bool = field(default=False, repr=False, compare=False)
    # The headers by lower-cased name, and the list they were built from: a message's headers
    # are asked for twenty-odd times while it is read and decided.
    _by_name: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)
    _indexed: list | None = field(default=None, repr=False, compare=False)

    def _index(self) -> dict[str, list[str]]:
        if self._indexed is not self.headers:
            index: dict[str, list[str]] = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), []).append(value)
            self._by_name, self._indexed = index, self.headers
        return self._by_name

    def header(self, name: str) -> str | None:
        """First raw (unfolded, undecoded) value of a header, or None."""
        values = self._index().get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return list(self._index().get(name.lower(), ()))

    @property
    def recipients(self) -> list[Address]:
        return self.to + self.cc

    @property
    def html_safe(self) -> str | None:
        """The HTML body sanitised for display (computed on first use)."""
        if self.html is None:
            return None
        if self._html_safe is None:
            self._html_safe = sanitize_html(self.html)
        return self._html_safe

    def add_defect(self, text: str) -> None:
        if len(self.defects) < MAX_DEFECTS and text not in self.defects:
            self.defects.append(text)


# ---------------------------------------------------------------------------
# entry points


def parse_email(raw: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> ParsedEmail:
    """Parse raw RFC 5322 bytes. Never raises."""
    try:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = str(raw).encode("utf-8", "surrogateescape")
        raw = bytes(raw)
        if len(raw) > max_size:
            parsed = parse_headers(raw[:HEADER_READ_LIMIT], len(raw))
            parsed.add_defect(f"message is {len(raw)} bytes, over the {max_size}-byte limit: headers only")
            return parsed
        return _parse_full(raw)
    except Exception as exc:  # the parser promises never to raise
        parsed = parse_headers(bytes(raw)[:HEADER_READ_LIMIT] if isinstance(raw, (bytes, bytearray)) else b"",
                                     len(raw) if isinstance(raw, (bytes, bytearray)) else 0)
        parsed.add_defect(f"unparsable structure ({type(exc).__name__}): headers only")
        return parsed


def parse_file(path, *, max_size: int = DEFAULT_MAX_SIZE) -> ParsedEmail:
    """Parse a message stored in a file; an oversized file is never read whole."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(0)
            if size > max_size:
                parsed = parse_headers(fh.read(HEADER_READ_LIMIT), size)
                parsed.add_defect(f"message is {size} bytes, over the {max_size}-byte limit: headers only")
                return parsed
            raw = fh.read()
    except OSError as exc:
        parsed = ParsedEmail()
        parsed.add_defect(f"cannot read {path}: {exc.strerror or exc}")
        return parsed
    return parse_email(raw, max_size=max_size)


def parse_headers(head: bytes, size: int) -> ParsedEmail:
    """The headers-only form (for oversized or unparsable mail); `size` is the full size."""
    parsed = ParsedEmail(raw_size=size, headers_only=True)
    try:
        match = _HEADER_END_RE.search(head)
        if match:
            head = head[: match.end()]
        msg = BytesHeaderParser(policy=PARSE_POLICY).parsebytes(head)
        read_headers(msg, parsed)
    except Exception as exc:
        parsed.add_defect(f"unreadable headers ({type(exc).__name__})")
    return parsed


_HEADER_LINE_RE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _repair_header_block(raw: bytes) -> tuple[bytes, int]:
    """Lines in the header block that are neither a header nor a continuation end the
    headers early in the stdlib (everything after becomes body). Senders and gateways
    produce them often: an indentation lost, a banner line on top. Make them continuations
    (or drop a leading banner) so the real headers are read."""
    end = _HEADER_END_RE.search(raw, 0, HEADER_READ_LIMIT)
    if not end:
        return raw, 0
    head = raw[: end.start()]
    lines = head.split(b"\n")
    bad = [i for i, line in enumerate(lines)
           if line.strip(b"\r") and line[:1] not in (b" ", b"\t") and not _HEADER_LINE_RE.match(line)
           and not (i == 0 and line.startswith(b"From "))]
    # Only lines with real headers after them are debris inside the header block; lines
    # after the last header are a body that forgot its blank separator line.
    last_header = max((i for i, line in enumerate(lines) if _HEADER_LINE_RE.match(line)), default=-1)
    bad = [i for i in bad if i < last_header]
    if not bad:
        return raw, 0
    if bad[0] == 0:
        good = sum(1 for line in lines[1:10] if _HEADER_LINE_RE.match(line))
        if good < 3:
            return raw, 0  # not a header block at all: a body without headers
    fixed = []
    for i, line in enumerate(lines):
        if i in bad:
            if not fixed:
                continue  # a banner before the first header
            line = b" " + line
        fixed.append(line)
    return b"\n".join(fixed) + raw[end.start():], len(bad)


def _parse_full(raw: bytes) -> ParsedEmail:
    repaired, count = _repair_header_block(raw)
    # The structure is split with compat32: policy.default builds a structured header object
    # for every part's Content-Type while splitting (about a sixth of all parsing time), and
    # we read headers and parameters from the raw values ourselves. Both policies give the
    # same result on every corpus message (the corpus floors and tests/mail hold it).
    try:
        msg = split_mime(repaired) or email.message_from_bytes(repaired, policy=policy.compat32)
    except RecursionError:
        parsed = parse_headers(raw[:HEADER_READ_LIMIT], len(raw))
        parsed.add_defect("MIME structure nested too deeply: headers only")
        return parsed
    parsed = ParsedEmail(raw_size=len(raw))
    if count:
        parsed.add_defect(f"{count} malformed header line(s) repaired")
    read_headers(msg, parsed)
    read_parts(msg, parsed)
    return parsed

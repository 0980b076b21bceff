"""Parse any raw email into one `ParsedEmail`, never raising.

Broken input gives whatever could be read plus `defects` (short strings). The standard
library's `email` package with `policy.default` does the MIME work; this module adds the
helpdesk's needs: charset repair, body choice, attachments with hashes, TNEF, uuencode,
a size limit, and limits on pathological structure. A part the HTML body shows by `cid:` is
inline, whatever its Content-Disposition says.
"""
from __future__ import annotations

import binascii
import email
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import Message
from email.header import decode_header
from email.headerregistry import HeaderRegistry
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from .charset import decode_text, detect_charset, has_surrogates, repair_header_text, scrub
from .mime import split_mime

DEFAULT_MAX_SIZE = 40 * 1024 * 1024
MAX_PARTS = 1000
MAX_DEFECTS = 50
# Header values longer than this skip the stdlib's header parser (slow on hostile input).
MAX_STRUCTURED_HEADER = 16 * 1024
# How much of an oversized message we read to find its headers.
HEADER_READ_LIMIT = 1024 * 1024



class _CachingHeaderRegistry(HeaderRegistry):
    """policy.default's header factory, minus two costs that are a large share of parsing:
    the registry builds a new class on every lookup, and the parser itself asks for the same
    part's Content-Type (and our reading for its Content-Transfer-Encoding) several times,
    each a full structured parse. Classes are kept; those few headers are parsed once per
    value. Header objects are immutable, so sharing one is safe; the cache is bounded."""

    _REPEATED = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
    _MAX_CACHED = 128  # enough for the repeats within a message; parse trees are big

    def __init__(self):
        super().__init__()
        self._classes: dict[str, type] = {}
        self._values: dict[tuple[str, str], object] = {}

    def __getitem__(self, name):
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = super().__getitem__(name)
        return cls

    def __call__(self, name, value):
        if name.lower() not in self._REPEATED:
            return self[name](name, value)
        key = (name, value)
        header = self._values.get(key)
        if header is None:
            if len(self._values) >= self._MAX_CACHED:
                self._values.clear()
            header = self._values[key] = self[name](name, value)
        return header


# policy.default with the caching factory above: same parsing, same header objects.
PARSE_POLICY = policy.default.clone(header_factory=_CachingHeaderRegistry())

_MSGID_RE = re.compile(r"<[^<>\s]+>")
_ENCODED_WORD_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _id_header(value: str | None) -> str | None:
    """Message-ID, In-Reply-To, References as written. Python's own email generator (and
    mailers built on it) folds a long id into RFC 2047 encoded words, which RFC 5322 does not
    allow in these headers; decode them, or threading loses the id."""
    if not value or "=?" not in value or not _ENCODED_WORD_RE.search(value):
        return value
    try:
        return "".join(
            part.decode(charset or "ascii", "replace") if isinstance(part, bytes) else part
            for part, charset in decode_header(value))
    except (ValueError, LookupError):
        return value
_ADDR_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*", re.UNICODE)
_ANGLE_ADDR_RE = re.compile(r"<\s*([^<>\s@]+@[^<>\s]+?)\s*>")
_DOMAIN_DEBRIS_RE = re.compile(r"[^\w.-]")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")


@dataclass(slots=True)
class Address:
    name: str
    address: str

    def as_dict(self) -> dict:
        return {"name": self.name, "address": self.address}

    def __str__(self) -> str:
        if self.name:
            return f'"{self.name}" <{self.address}>'
        return self.address


@dataclass(slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int
    sha256: str
    content_id: str | None
    inline: bool
    data: bytes = field(repr=False)
    # True when the mail gave no name and we made one up (e.g. "part-3.png").
    generated_name: bool = False
    charset: str | None = None

    def as_dict(self) -> dict:
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256, "inline": self.inline}


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
            from .sanitize import sanitize_html

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


# ---------------------------------------------------------------------------
# headers


def parse_headers(head: bytes, size: int) -> ParsedEmail:
    """The headers-only form (for oversized or unparsable mail); `size` is the full size."""
    parsed = ParsedEmail(raw_size=size, headers_only=True)
    try:
        match = _HEADER_END_RE.search(head)
        if match:
            head = head[: match.end()]
        msg = BytesHeaderParser(policy=PARSE_POLICY).parsebytes(head)
        _read_headers(msg, parsed)
    except Exception as exc:
        parsed.add_defect(f"unreadable headers ({type(exc).__name__})")
    return parsed


_CHARSET_PARAM_RE = re.compile(r"""charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)


def _charset_hint(msg: Message) -> str | None:
    """The first charset declared anywhere near the top: the likely charset of raw 8-bit headers."""
    for key, value in getattr(msg, "_headers", []):
        if key.lower() == "content-type":
            m = _CHARSET_PARAM_RE.search(str(value))
            if m:
                return m.group(1)
    payload = getattr(msg, "_payload", None)
    if isinstance(payload, list):
        for sub in payload[:3]:
            for key, value in getattr(sub, "_headers", []):
                if key.lower() == "content-type":
                    m = _CHARSET_PARAM_RE.search(str(value))
                    if m:
                        return m.group(1)
    return None


def _read_headers(msg: Message, parsed: ParsedEmail) -> None:
    # Raw (name, value) pairs as the parser stored them: reading them does not trigger
    # the slow structured header parser, which we only run for address headers.
    raw_headers = getattr(msg, "_headers", [])
    hint = _charset_hint(msg)
    parsed._hint = hint
    raw8 = [str(v) for _k, v in raw_headers if not str(v).isascii() and has_surrogates(str(v))]
    guess = detect_charset("\n".join(raw8).encode("utf-8", "surrogateescape")) if raw8 else None
    parsed._guess = guess
    headers = []
    raw_by_name: dict[str, list] = {}
    for name, value in raw_headers:
        name = str(name)
        raw_by_name.setdefault(name.lower(), []).append(value)
        if not isinstance(value, str):
            value = str(value)
        if "\n" in value:
            value = _FOLD_RE.sub("", value)
        headers.append((name, scrub(repair_header_text(value, hint, guess))))
    parsed.headers = headers

    for defect in getattr(msg, "defects", []):
        parsed.add_defect(_defect_name(defect))

    mid = _id_header(parsed.header("message-id"))
    if mid:
        ids = _MSGID_RE.findall(mid)
        parsed.message_id = ids[0] if ids else (f"<{mid.strip()}>" if mid.strip() and " " not in mid.strip() else None)
    irt = _id_header(parsed.header("in-reply-to"))
    if irt:
        ids = _MSGID_RE.findall(irt)
        bare = irt.strip()
        # Some clients drop the angle brackets; the id is still the id.
        parsed.in_reply_to = ids[0] if ids else (f"<{bare}>" if "@" in bare and " " not in bare else None)
    refs: list[str] = []
    for value in parsed.header_all("references"):
        refs.extend(_MSGID_RE.findall(_id_header(value)))
    parsed.references = list(dict.fromkeys(refs))

    parsed.subject = _unstructured(msg, "subject", parsed)
    parsed.date = _date(parsed.header("date"), parsed)

    parsed.from_ = _first(_addresses(raw_by_name, "from", parsed))
    parsed.sender = _first(_addresses(raw_by_name, "sender", parsed))
    parsed.to = _addresses(raw_by_name, "to", parsed)
    parsed.cc = _addresses(raw_by_name, "cc", parsed)
    parsed.bcc = _addresses(raw_by_name, "bcc", parsed)
    parsed.reply_to = _addresses(raw_by_name, "reply-to", parsed)

    rp = parsed.header("return-path")
    if rp is not None:
        stripped = rp.strip()
        if stripped in ("<>", "", "<<>>"):
            parsed.return_path = ""
        else:
            found = _ADDR_RE.search(stripped)
            parsed.return_path = found.group(0) if found else stripped.strip("<>")

    if parsed.from_ is None:
        # Someone must be the contact: the next best sender statement.
        fallback = parsed.sender or _first(parsed.reply_to)
        if fallback is None and parsed.return_path:
            fallback = Address("", parsed.return_path)
        if fallback is not None:
            parsed.from_ = fallback
            parsed.add_defect("no usable From: sender taken from Sender/Reply-To/Return-Path")

    ctype = parsed.header("content-type")
    if ctype:
        parsed.content_type = ctype.split(";", 1)[0].strip().lower() or "text/plain"


def _unstructured(msg: Message, name: str, parsed: ParsedEmail) -> str:
    raw = None
    for key, value in getattr(msg, "_headers", []):
        if key.lower() == name:
            raw = value
            break
    if raw is None:
        return ""
    value = decode_words(_FOLD_RE.sub("", str(raw)), parsed._hint, parsed, name,
                         parsed._guess)
    return scrub(" ".join(value.split())) if "\n" in value or "\r" in value else scrub(value.strip())


def decode_words(raw: str, hint: str | None = None, parsed: ParsedEmail | None = None,
                 name: str = "header", guess: str | None = None) -> str:
    """Decode RFC 2047 encoded words with our charset repair (GB2312 that is really GBK,
    unknown charsets, raw 8-bit bytes)."""
    if "=?" not in raw:
        return repair_header_text(raw, hint, guess)
    try:
        chunks = decode_header(raw)
    except Exception:
        if parsed is not None:
            parsed.add_defect(f"{name}: broken encoded words, kept raw")
        return repair_header_text(raw, hint)
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(repair_header_text(chunk, hint))
            continue
        text, _codec, defect = decode_text(chunk, charset or hint)
        if defect and parsed is not None:
            parsed.add_defect(f"{name}: {defect}")
        out.append(text)
    return "".join(out)


def _date(raw: str | None, parsed: ParsedEmail) -> datetime | None:
    if not raw or not raw.strip():
        return None
    try:
        value = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed.add_defect("date: unreadable")
        return None
    if value is None:
        parsed.add_defect("date: unreadable")
        return None
    if value.tzinfo is None:
        # "-0000" means "zone unknown": UTC is the honest reading.
        value = value.replace(tzinfo=timezone.utc)
    return value


_HEADER_CLASSES: dict[str, type] = {}


def _header_object(name: str, value: str):
    """policy.default's header object for a raw value. The registry builds a new class on
    every lookup (a measurable share of parse time), so the classes are kept."""
    cls = _HEADER_CLASSES.get(name)
    if cls is None:
        cls = _HEADER_CLASSES[name] = PARSE_POLICY.header_factory[name]
    return cls(name, value)


def _first(items: list[Address]) -> Address | None:
    return items[0] if items else None


_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_PLAIN_SPEC = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# One mailbox in its everyday form: `Name <spec>`, `"Last, First" <spec>` or a bare spec.
_PLAIN_MAILBOX_RE = re.compile(
    rf'[ \t]*(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<atoms>[{_ATEXT}]+(?:[ \t]+[{_ATEXT}]+)*))?[ \t]*'
    rf'<(?P<angle>{_PLAIN_SPEC})>|(?P<bare>{_PLAIN_SPEC}))[ \t]*(?:,|$)')


def _plain_addresses(raw: str) -> list[Address] | None:
    """Addresses of a header written in the everyday ASCII forms, read with one regular
    expression; None for anything else (comments, groups, encoded words, quoting inside
    names, obsolete syntax), which goes to the stdlib's full parser. Both readings agree on
    the forms taken here (tests/mail/test_parse.py compares them); the full parser costs
    about a third of all parsing time."""
    if "=?" in raw or not raw.isascii():
        return None
    out: list[Address] = []
    pos, end = 0, len(raw.rstrip())
    while pos < end:
        m = _PLAIN_MAILBOX_RE.match(raw, pos)
        if m is None:
            return None
        if m.group("bare"):
            out.append(_make_address("", m.group("bare")))
        else:
            name = m.group("quoted") if m.group("quoted") is not None else m.group("atoms")
            out.append(_make_address(name, m.group("angle")))
        pos = m.end()
    return out or None


def _addresses(raw_by_name: dict[str, list], name: str, parsed: ParsedEmail) -> list[Address]:
    """The addresses of one header (`name` lower-cased), from the parser's raw values by name."""
    raws = raw_by_name.get(name, ())
    out: list[Address] = []
    hint = parsed._hint
    for raw in raws:
        raw = repair_header_text(_FOLD_RE.sub("", str(raw)), hint, parsed._guess)
        found = _plain_addresses(raw)
        if found is None:
            found = _structured_addresses(name, raw)
        if found is None:
            found = _addresses_fallback(raw)
            if found:
                parsed.add_defect(f"{name}: malformed address header, addresses recovered")
            elif raw.strip() and ":;" not in raw:
                parsed.add_defect(f"{name}: no address found")
        out.extend(found)
    return out


def _structured_addresses(name: str, raw: str) -> list[Address] | None:
    """The stdlib's full RFC 5322 reading; None where it gave up."""
    if len(raw) > MAX_STRUCTURED_HEADER:
        return None
    try:
        header = _header_object(name, raw)
        found = []
        for addr in header.addresses:
            spec = addr.addr_spec
            if not spec or "@" not in spec or any(ch.isspace() for ch in spec) or "<" in spec or ">" in spec:
                return None
            found.append(_make_address(addr.display_name or _comment_name(raw, header), spec))
        if not found and _ADDR_RE.search(raw) and ":;" not in raw:
            return None
        if found and "<" in raw:
            # `alice@x <bob@y>`: the address in angle brackets is the real one
            bracketed = {m.lower() for m in _ANGLE_ADDR_RE.findall(raw)}
            if not bracketed <= {a.address.lower() for a in found}:
                return None
        return found
    except Exception:
        return None


def _comment_name(raw: str, header) -> str:
    """`user@example.com (Marc Smith)`: the old comment form of a display name."""
    if len(header.addresses) != 1 or "(" not in raw:
        return ""
    m = re.search(r"\(([^()]+)\)\s*$", raw.strip())
    return decode_words(m.group(1)) if m else ""


def _make_address(name: str | None, address: str) -> Address:
    name = scrub(repair_header_text(name or "")).strip().strip('"').strip()
    if "=?" in name:  # encoded words inside quotes: common, and decoded by every client
        name = decode_words(name)
    name = " ".join(name.split())
    address = scrub(repair_header_text(address)).strip().strip("'\"<>")
    local, at, domain = address.rpartition("@")
    if at:
        # quotes and stray punctuation in a domain are typing debris (`exampl'e.com`)
        address = local.strip("'\"") + "@" + _DOMAIN_DEBRIS_RE.sub("", domain)
    if name.lower() == address.lower() or name.lower() == f"<{address.lower()}>":
        name = ""
    return Address(name, address)


def _addresses_fallback(raw: str) -> list[Address]:
    """Tolerant reading of an address header the structured parser rejected."""
    try:
        text = str(_header_object("subject", raw)) if len(raw) <= MAX_STRUCTURED_HEADER else raw
    except Exception:
        text = raw
    text = repair_header_text(text)
    out = []
    for chunk in _split_addresses(text):
        # Inside <...> spaces are debris (`<power quadrant system@x>`); elsewhere they split words.
        angle = re.search(r"<([^<>]*)>", chunk)
        if angle:
            spec = "".join(angle.group(1).split())
            name = chunk[: angle.start()].strip()
        else:
            quoted_local = re.search(r'"([^"]+)"\s*@\s*([\w.-]+)', chunk)
            if quoted_local:
                # `"Some Name"@example.com>`: a display name typed where the local part goes
                spec = "".join(quoted_local.group(1).split()) + "@" + quoted_local.group(2)
                out.append(_make_address("", spec))
                continue
            spec_match = _ADDR_RE.search(chunk.replace('"', ""))
            if not spec_match:
                continue
            spec = spec_match.group(0)
            name = chunk.replace(spec, "") if "@" in chunk.replace(spec, "") else ""
        spec_match = _ADDR_RE.search(spec.replace('"', ""))
        if not spec_match:
            continue
        name = name.strip().strip('"').strip() if angle else ""
        out.append(_make_address(name, spec_match.group(0)))
    return out


def _split_addresses(text: str) -> list[str]:
    parts, buf, quoted, depth = [], [], False, 0
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            depth += 1
        elif ch == ">" and not quoted and depth:
            depth -= 1
        if ch in ",;" and not quoted and not depth:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p for p in parts if p.strip()]


def _defect_name(defect) -> str:
    return type(defect).__name__ if not isinstance(defect, str) else defect


# ---------------------------------------------------------------------------
# body and attachments


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
           if line.strip(b"\r") and not line[:1] in (b" ", b"\t") and not _HEADER_LINE_RE.match(line)
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
    _read_headers(msg, parsed)
    _read_parts(msg, parsed)
    return parsed


@dataclass(slots=True)
class _PartInfo:
    ctype: str
    params: dict
    disposition: str | None
    filename: str | None
    charset: str | None
    cte: str
    content_id: str | None


def _raw_header(part: Message, name: str) -> str | None:
    for key, value in getattr(part, "_headers", []):
        if key.lower() == name:
            return _FOLD_RE.sub("", str(value))
    return None


def _split_params(value: str) -> list[str]:
    pieces, buf, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    pieces.append("".join(buf))
    return pieces


def _parse_params(value: str | None) -> tuple[str, dict]:
    """(main value, parameters) of a Content-Type/-Disposition value, RFC 2231 included.

    Our own reading of the raw header: the stdlib's policy.default re-parses the whole
    header on every get_param()/get_filename() call, which dominated parse time."""
    if not value:
        return "", {}
    pieces = _split_params(value)
    pairs = []
    for piece in pieces[1:]:
        name, sep, val = piece.partition("=")
        if sep and name.strip():
            pairs.append((name.strip().lower(), val.strip()))
    params: dict = {}
    try:
        decoded = email.utils.decode_params([("", "")] + pairs)[1:]
    except Exception:
        decoded = pairs
    for name, val in decoded:
        try:
            val = email.utils.collapse_rfc2231_value(val) if isinstance(val, tuple) else email.utils.unquote(val)
        except Exception:
            val = val[2] if isinstance(val, tuple) else str(val)
        params.setdefault(name, str(val))
    return pieces[0].strip().lower(), params


def _part_info(part: Message, parent_type: str | None) -> _PartInfo:
    ctype, params = _parse_params(_raw_header(part, "content-type"))
    if ctype.count("/") != 1 or " " in ctype:
        ctype = "message/rfc822" if parent_type == "multipart/digest" else "text/plain"
    disposition, dparams = _parse_params(_raw_header(part, "content-disposition"))
    filename = dparams.get("filename") or params.get("name")
    cid = _raw_header(part, "content-id")
    cid = cid.strip().strip("<>").strip() if cid else None
    return _PartInfo(
        ctype=ctype, params=params, disposition=disposition or None,
        filename=_clean_filename(filename) or None if filename else None,
        charset=params.get("charset") or None,
        cte=(_raw_header(part, "content-transfer-encoding") or "").strip().lower(),
        content_id=cid or None)


def _clean_filename(name: str) -> str:
    name = repair_header_text(name)
    if "=?" in name:  # encoded words where RFC 2231 was meant: senders do it anyway
        try:
            name = str(_header_object("subject", name))
        except Exception:
            pass
    name = scrub(name).replace("\r", "").replace("\n", "").strip().strip('"')
    # Keep the base name only: a path in a filename is never meant for us.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:255]


def _payload_bytes(part: Message, parsed: ParsedEmail) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        parsed.add_defect(f"undecodable part ({type(exc).__name__})")
        data = None
    if data is None:
        payload = part.get_payload()
        if isinstance(payload, str):
            data = payload.encode("ascii", "surrogateescape")
        else:
            data = b""
    return data


_UU_BEGIN_RE = re.compile(r"^begin(?:-base64)?\s+[0-7]{3,4}\s+(.+?)\s*$")


def _uudecode(part: Message, parsed: ParsedEmail) -> tuple[bytes, str | None]:
    """Tolerant uudecode: the stdlib's drops the file name and gives up on sloppy lines."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b"", None
    lines = payload.replace("\r\n", "\n").split("\n")
    name = None
    start = 0
    for i, line in enumerate(lines):
        m = _UU_BEGIN_RE.match(line)
        if m:
            name, start = _clean_filename(m.group(1)), i + 1
            break
    out = bytearray()
    for line in lines[start:]:
        if line.strip() == "end":
            break
        if not line:
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines short: decode what the length byte promises.
            try:
                count = ((ord(line[0]) - 32) & 63) * 4 // 3
                out += binascii.a2b_uu(line[: count + 1])
            except (binascii.Error, IndexError):
                parsed.add_defect("uuencoded attachment: bad line skipped")
    return bytes(out), name


def _iter_leaves(msg: Message, parsed: ParsedEmail):
    """Depth-first walk without recursion; message/* containers are leaves (kept whole)."""
    stack: list[tuple[Message, str | None]] = [(msg, None)]
    count = 0
    while stack:
        part, parent_type = stack.pop()
        count += 1
        if count > MAX_PARTS:
            parsed.add_defect(f"more than {MAX_PARTS} MIME parts: the rest ignored")
            return
        for defect in getattr(part, "defects", []):
            parsed.add_defect(_defect_name(defect))
        info = _part_info(part, parent_type)
        payload = part._payload
        if isinstance(payload, list) and not info.ctype.startswith("message/"):
            stack.extend((sub, info.ctype) for sub in reversed(payload))
        elif info.ctype.startswith("multipart/") and isinstance(payload, str):
            # A multipart whose boundary never shows up: its body is plain text to us.
            info.ctype = "text/plain"
            yield part, info
        else:
            yield part, info


def _read_parts(msg: Message, parsed: ParsedEmail) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    index = 0
    for part, info in _iter_leaves(msg, parsed):
        index += 1
        try:
            ctype, disposition, filename, charset, cte = (info.ctype, info.disposition, info.filename,
                                                          info.charset, info.cte)
            is_body_type = ctype in ("text/plain", "text/html") or (ctype == "text/enriched")
            if (is_body_type and disposition != "attachment" and not filename
                    and cte not in ("x-uuencode", "uuencode", "x-uue")):
                data = _payload_bytes(part, parsed)
                text, _codec, defect = decode_text(data, charset)
                if defect:
                    parsed.add_defect(f"part {index}: {defect}")
                text = scrub(text)
                if "\r" in text:
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                if ctype == "text/html":
                    htmls.append(text)
                else:
                    texts.append(_unflow(text, info.params) if ctype == "text/plain" else text)
                continue
            if ctype.startswith("message/") or ctype == "text/rfc822-headers":
                _add_message_part(part, info, parsed, index)
                continue
            if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
                data, uu_name = _uudecode(part, parsed)
                filename = filename or uu_name
            else:
                data = _payload_bytes(part, parsed)
            if ctype in ("application/octet-stream", "application/x-unknown", "binary/octet-stream") and filename:
                # Senders label everything octet-stream; the name tells the portal what to show.
                ctype = mimetypes.guess_type(filename)[0] or ctype
            if ctype in ("application/ms-tnef", "application/vnd.ms-tnef") or (filename or "").lower() == "winmail.dat":
                if _unpack_tnef(data, parsed, texts, htmls):
                    continue
            _add_attachment(parsed, data, ctype, disposition, filename, info.content_id, index, charset)
        except Exception as exc:  # one bad part must not cost the others
            parsed.add_defect(f"part {index}: unreadable ({type(exc).__name__})")

    parsed.text = "\n".join(t for t in texts if t) if len(texts) > 1 else (texts[0] if texts else "")
    parsed.html = "\n".join(htmls) if htmls else None
    if parsed.html and any(a.content_id and not a.inline for a in parsed.attachments):
        # What the HTML shows is part of the body, whatever its Content-Disposition says.
        shown = html_content_ids(parsed.html)
        for a in parsed.attachments:
            if a.content_id in shown:
                a.inline = True
    if not parsed.text.strip() and parsed.html:
        parsed.text = html_to_text(parsed.html)
        parsed.text_from_html = True


def _unflow(text: str, params: dict) -> str:
    """Undo format=flowed soft line breaks (RFC 3676)."""
    if params.get("format", "").lower() != "flowed":
        return text
    delsp = params.get("delsp", "").lower() == "yes"

    def render(depth: int, content: str) -> str:
        return f"{'>' * depth} {content}" if depth else content

    out: list[str] = []
    pending: tuple[int, str] | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        if body.startswith(" "):
            body = body[1:]  # space-stuffing
        if pending is not None and pending[0] != depth:
            out.append(render(*pending))
            pending = None
        content = (pending[1] if pending else "") + body
        if body.endswith(" ") and body != "-- ":
            pending = (depth, content[:-1] if delsp else content)
            continue
        out.append(render(depth, content))
        pending = None
    if pending is not None:
        out.append(render(*pending))
    return "\n".join(out)


def _add_message_part(part: Message, info: _PartInfo, parsed: ParsedEmail, index: int) -> None:
    ctype, disposition, filename = info.ctype, info.disposition, info.filename
    payload = part._payload
    data = b""
    try:
        if isinstance(payload, list):
            if ctype == "message/rfc822" and payload:
                data = payload[0].as_bytes(policy=policy.compat32)
            else:
                # delivery-status and friends: header blocks separated by blank lines.
                blocks = []
                for block in payload:
                    blocks.append("\n".join(f"{k}: {v}" for k, v in getattr(block, "_headers", [])))
                data = "\n\n".join(blocks).encode("utf-8", "surrogateescape")
        else:
            data = _payload_bytes(part, parsed)
    except Exception as exc:
        parsed.add_defect(f"part {index}: unreadable {ctype} ({type(exc).__name__})")
        data = _payload_bytes(part, parsed) if not isinstance(payload, list) else b""
    if not filename and ctype == "message/rfc822" and isinstance(payload, list) and payload:
        try:
            subject = decode_words(_raw_header(payload[0], "subject") or "").strip()
        except Exception:
            subject = ""
        name = re.sub(r"[\\/:*?\"<>|\r\n\t]+", " ", subject).strip()[:100]
        filename = f"{name or 'forwarded-message'}.eml"
    _add_attachment(parsed, data, ctype, disposition, filename, info.content_id, index, None)


def _add_attachment(parsed: ParsedEmail, data: bytes, ctype: str, disposition: str | None,
                    filename: str | None, cid: str | None, index: int, charset: str | None) -> None:
    generated = False
    if not filename:
        generated = True
        ext = mimetypes.guess_extension(ctype) or (".txt" if ctype.startswith("text/") else ".bin")
        if ext in (".jpe", ".jpeg"):
            ext = ".jpg"
        filename = f"part-{index}{ext}"
    inline = disposition == "inline" or (cid is not None and disposition != "attachment")
    parsed.attachments.append(Attachment(
        filename=filename, content_type=ctype, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), content_id=cid, inline=inline,
        data=data, generated_name=generated, charset=charset))


def _unpack_tnef(data: bytes, parsed: ParsedEmail, texts: list[str], htmls: list[str]) -> bool:
    """Replace winmail.dat by what it carries; False keeps it as a plain attachment."""
    try:
        from tnefparse import TNEF

        tnef = TNEF(data)
    except Exception as exc:
        parsed.add_defect(f"winmail.dat unreadable ({type(exc).__name__}): kept as attachment")
        return False
    found = False
    for att in getattr(tnef, "attachments", []) or []:
        try:
            name = att.long_filename() or att.name
        except Exception:
            name = getattr(att, "name", "") or ""
        name = _clean_filename(name.decode("latin-1") if isinstance(name, bytes) else str(name or "")).strip("\x00")
        payload = att.data if isinstance(att.data, bytes) else b""
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parsed.attachments.append(Attachment(
            filename=name or f"tnef-{len(parsed.attachments) + 1}.bin", content_type=ctype,
            size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), content_id=None,
            inline=False, data=payload, generated_name=not name))
        found = True
    for attr, bucket in (("htmlbody", htmls), ("body", texts)):
        value = getattr(tnef, attr, None)
        if value and not bucket:  # the MIME body, when there is one, is what the sender saw
            if isinstance(value, bytes):
                value = decode_text(value, None)[0]
            value = scrub(str(value)).strip("\x00")
            if value.strip():
                bucket.append(value)
                found = True
    return found


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
        from inscriptis import get_text

        return scrub(get_text(html)).strip("\n")
    except Exception:
        # inscriptis/lxml can choke on hostile markup: strip tags crudely instead.
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
        text = re.sub(r"(?s)<[^>]*>", " ", text)
        import html as html_lib

        return " ".join(html_lib.unescape(text).split())

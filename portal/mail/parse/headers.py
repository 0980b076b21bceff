"""The header block of a parsed mail: ids, subject, date and addresses, repaired where senders
break them (raw 8-bit text, encoded words where RFC 5322 allows none, malformed address lists).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.header import decode_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from portal.mail.charset import decode_text, detect_charset, has_surrogates, repair_header_text, scrub

if TYPE_CHECKING:  # pragma: no cover
    from portal.mail.parse import ParsedEmail

# Header values longer than this skip the stdlib's header parser (slow on hostile input).
MAX_STRUCTURED_HEADER = 16 * 1024
MAX_SUBJECT = 2_000
# More To and Cc than any conversation has: all are read, and the mail says so (a mass mailing, or
# a message built to make every reply go to thousands).
MANY_RECIPIENTS = 1_000


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


def read_headers(msg: Message, parsed: ParsedEmail) -> None:
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
        parsed.add_defect(defect_name(defect))

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
    if len(parsed.subject) > MAX_SUBJECT:
        # Every rule that reads the subject scans it; a megabyte of subject is a way to burn CPU.
        parsed.subject = parsed.subject[:MAX_SUBJECT]
        parsed.add_defect(f"subject longer than {MAX_SUBJECT:,} characters: cut there")
    parsed.date = _date(parsed.header("date"), parsed)

    parsed.from_ = _first(_addresses(raw_by_name, "from", parsed))
    parsed.sender = _first(_addresses(raw_by_name, "sender", parsed))
    parsed.to = _addresses(raw_by_name, "to", parsed)
    parsed.cc = _addresses(raw_by_name, "cc", parsed)
    if len(parsed.to) + len(parsed.cc) > MANY_RECIPIENTS:
        parsed.add_defect(f"{len(parsed.to) + len(parsed.cc):,} recipients in To and Cc, "
                          f"more than {MANY_RECIPIENTS:,}: all kept")
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


def header_object(name: str, value: str):
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
        header = header_object(name, raw)
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
        text = str(header_object("subject", raw)) if len(raw) <= MAX_STRUCTURED_HEADER else raw
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


def defect_name(defect) -> str:
    return type(defect).__name__ if not isinstance(defect, str) else defect


def raw_header(part: Message, name: str) -> str | None:
    """The first value of a part's header (`name` lower-cased) as written, unfolded."""
    for key, value in getattr(part, "_headers", []):
        if key.lower() == name:
            return _FOLD_RE.sub("", str(value))
    return None

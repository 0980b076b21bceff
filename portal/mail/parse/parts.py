"""The MIME tree of a parsed mail: which parts make the body, and the attachments (with their
hashes, uuencoded files and what winmail.dat carries). Parameters and file names are read from
the raw headers ourselves; the stdlib re-parses a whole header on every get_param()."""
from __future__ import annotations

import binascii
import email
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from typing import TYPE_CHECKING

from portal.mail.charset import decode_text, repair_header_text, scrub
from portal.mail.html_body import crude_text, html_content_ids, html_to_text, html_too_complex
from portal.mail.parse.headers import decode_words, defect_name, header_object, raw_header

if TYPE_CHECKING:  # pragma: no cover
    from portal.mail.parse import ParsedEmail

MAX_PARTS = 1000


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


@dataclass(slots=True)
class _PartInfo:
    ctype: str
    params: dict
    disposition: str | None
    filename: str | None
    charset: str | None
    cte: str
    content_id: str | None


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
    ctype, params = _parse_params(raw_header(part, "content-type"))
    if ctype.count("/") != 1 or " " in ctype:
        ctype = "message/rfc822" if parent_type == "multipart/digest" else "text/plain"
    disposition, dparams = _parse_params(raw_header(part, "content-disposition"))
    filename = dparams.get("filename") or params.get("name")
    cid = raw_header(part, "content-id")
    cid = cid.strip().strip("<>").strip() if cid else None
    return _PartInfo(
        ctype=ctype, params=params, disposition=disposition or None,
        filename=_clean_filename(filename) or None if filename else None,
        charset=params.get("charset") or None,
        cte=(raw_header(part, "content-transfer-encoding") or "").strip().lower(),
        content_id=cid or None)


def _clean_filename(name: str) -> str:
    name = repair_header_text(name)
    if "=?" in name:  # encoded words where RFC 2231 was meant: senders do it anyway
        try:
            name = str(header_object("subject", name))
        except Exception:
            pass
    name = scrub(name).replace("\r", "").replace("\n", "").strip().strip('"')
    # Keep the base name only: a path in a filename is never meant for us.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:255]


# Base64 the stdlib's first, strict reading accepts: only the alphabet across line breaks, then
# at most two "=" (whole groups of four is checked apart).
_CLEAN_BASE64_RE = re.compile(r"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")


def clean_base64(part: Message) -> bytes | None:
    """A base64 part decoded straight from its text: the same bytes as get_payload(decode=True),
    without the three copies the stdlib makes of the encoded text first (as bytes, as lines,
    joined), which for a 38 MB attachment were 150 MB at the fetch's peak. None when the part is
    not plainly clean base64: the stdlib reads it, with its repairs."""
    payload = part._payload
    if not isinstance(payload, str) or str(part.get("content-transfer-encoding", "")).lower() != "base64":
        return None
    if not _CLEAN_BASE64_RE.fullmatch(payload):
        return None
    if (len(payload) - payload.count("\n") - payload.count("\r")) % 4:
        return None
    return binascii.a2b_base64(payload)  # line breaks are skipped, as the stdlib's join drops them


def _payload_bytes(part: Message, parsed: ParsedEmail) -> bytes:
    data = clean_base64(part)
    if data is not None:
        return data
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
            parsed.add_defect(defect_name(defect))
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


def read_parts(msg: Message, parsed: ParsedEmail) -> None:
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
    if parsed.html and (hostile := html_too_complex(parsed.html)):
        # Kept in the raw mail; shown and decided by its text, which costs one pass to get.
        parsed.add_defect(f"the HTML body {hostile}: shown as plain text")
        if not parsed.text.strip():
            parsed.text = crude_text(parsed.html)
            parsed.text_from_html = True
        parsed.html = None
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
            subject = decode_words(raw_header(payload[0], "subject") or "").strip()
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

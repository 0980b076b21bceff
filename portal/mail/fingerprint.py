"""Duplicate fingerprints (design step 4), as sha256 hex strings.

raw:      the whole raw message, byte for byte.
content:  sender, recipients, subject, date, body text, attachment hashes.
envelope: sender, recipients, subject, date, Message-ID, attachment hashes (no body).

content and envelope only read what the sender wrote, normalised, so that one mail delivered
twice (other Received / Delivered-To / X-Original-To headers, CRLF vs LF, re-folded headers)
gives the same values.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import timezone

from .parse import ParsedEmail


@dataclass(frozen=True, slots=True)
class Fingerprints:
    raw: str
    content: str
    envelope: str

    def as_dict(self) -> dict:
        return {"raw": self.raw, "content": self.content, "envelope": self.envelope}


def raw_fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _norm(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFC", text or "").split())


def _body(text: str) -> str:
    # Transports re-wrap line ends and trailing blanks; the words are what the sender wrote.
    lines = unicodedata.normalize("NFC", text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _common(parsed: ParsedEmail) -> list[str]:
    sender = (parsed.from_.address if parsed.from_ else "").lower()
    recipients = sorted({a.address.lower() for a in parsed.to + parsed.cc})
    date = parsed.date.astimezone(timezone.utc).isoformat() if parsed.date else ""
    attachments = sorted(a.sha256 for a in parsed.attachments)
    return [sender, ",".join(recipients), _norm(parsed.subject), date, ",".join(attachments)]


def _digest(parts: list[str]) -> str:
    # Unit separator between fields: no field value can fake a boundary.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def fingerprints(raw: bytes, parsed: ParsedEmail) -> Fingerprints:
    common = _common(parsed)
    return Fingerprints(
        raw=raw_fingerprint(raw),
        content=_digest(["content"] + common + [_body(parsed.text)]),
        envelope=_digest(["envelope"] + common + [(parsed.message_id or "").strip()]),
    )

"""Ticket references in mail: formats, signed tags and tokens, Message-IDs, subject comparison.

A reference is `PREFIX-NUMBER` (`T-1042`, or an MSP's own code: `DEMO-1042`). Where a reference
travels in a place that anyone could type (a plus address, the hidden body token) it carries a
short keyed signature — HMAC-SHA256 with the installation secret, base32, lowercase,
truncated — so that a guessed number never threads into someone else's ticket. In a body, an
unsigned reference counts only in the subject's form (`[T-1042]`): "Model T-800" is not one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

# Outbound mail carries this line above the quoted history; it is also a waterline.
REPLY_MARKER = "## Please reply above this line ##"

BODY_SCAN_LIMIT = 5000
SIGNATURE_LENGTH = 5
_SIG_ALPHABET = "a-z2-7"
_REF_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}$")


def sign_ref(ref: str, secret: bytes, length: int = SIGNATURE_LENGTH) -> str:
    """Short keyed signature of a reference (case-insensitive: mail systems lowercase addresses)."""
    mac = hmac.new(secret, b"tidemark-ref:" + ref.upper().encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii").lower()[:length]


def _signature_ok(ref: str, signature: str, secret: bytes) -> bool:
    return hmac.compare_digest(sign_ref(ref, secret, len(signature)), signature.lower()) \
        and len(signature) >= SIGNATURE_LENGTH


@dataclass(frozen=True)
class RefFormat:
    """How one MSP writes its ticket references."""

    prefix: str = "T"
    subject_format: str = "[{ref}]"

    def __post_init__(self) -> None:
        if not _REF_PREFIX_RE.match(self.prefix):
            raise ValueError(f"reference prefix must be letters and digits starting with a letter: {self.prefix!r}")
        if self.subject_format.count("{ref}") != 1:
            raise ValueError("subject format must contain {ref} exactly once")

    # -- building -----------------------------------------------------------

    def ref(self, number: int) -> str:
        return f"{self.prefix.upper()}-{int(number)}"

    def subject_tag(self, ref: str) -> str:
        return self.subject_format.replace("{ref}", ref)

    def subject_with_ref(self, subject: str, ref: str) -> str:
        """Subject for outbound mail: the reference once, in front; an existing tag is kept."""
        subject = " ".join((subject or "").split())
        if ref.upper() in [r.upper() for r in self.refs_in_subject(subject)]:
            return subject
        tag = self.subject_tag(ref)
        return f"{tag} {subject}" if subject else tag

    def tag(self, ref: str, secret: bytes) -> str:
        """`T-1042.k3f9q`: what goes after the + of a plus address."""
        return f"{ref}.{sign_ref(ref, secret)}"

    def plus_address(self, address: str, ref: str, secret: bytes) -> str:
        local, _, domain = address.rpartition("@")
        if not local:
            raise ValueError(f"not an address: {address!r}")
        local = local.split("+", 1)[0]
        return f"{local}+{self.tag(ref, secret)}@{domain}"

    def token(self, ref: str, secret: bytes) -> str:
        """The hidden reference token carried in outbound bodies (plain text and HTML)."""
        return f"[ref:{self.tag(ref, secret)}]"

    def token_html(self, ref: str, secret: bytes) -> str:
        # Small and grey, but real text: clients drop display:none when quoting.
        return f'<span style="color:#999999;font-size:10px">{self.token(ref, secret)}</span>'

    # -- reading ------------------------------------------------------------

    @property
    def _ref_pattern(self) -> str:
        return rf"{re.escape(self.prefix)}-(?:0*)([1-9][0-9]{{0,11}}|0)"

    def _canonical(self, number: str) -> str:
        return f"{self.prefix.upper()}-{int(number)}"

    def _subject_regex(self, *, body: bool = False) -> re.Pattern:
        before, after = self.subject_format.split("{ref}")
        lead = _loose(before) + r"\s*" if before.strip() else r"(?<![\w-])"
        tail = r"\s*" + _loose(after) if after.strip() else r"(?![\w-])"
        if body and not after.strip():
            # Nothing closes the reference: `T-1042.k3f9q` is a tag (signed or forged), not a reference.
            tail += rf"(?!\.[{_SIG_ALPHABET}0-9])"
        return re.compile(lead + self._ref_pattern + tail, re.IGNORECASE)

    def refs_in_subject(self, subject: str | None) -> list[str]:
        if not subject:
            return []
        return _unique(self._canonical(m.group(1)) for m in self._subject_regex().finditer(subject))

    def refs_in_body(self, text: str | None, limit: int = BODY_SCAN_LIMIT) -> list[str]:
        """References written as in the subject (`[T-1042]`), not bare: "Model T-800" is no reference."""
        if not text:
            return []
        return _unique(self._canonical(m.group(1)) for m in self._subject_regex(body=True).finditer(text[:limit]))

    def refs_in_recipients(self, addresses: Iterable[str], secret: bytes) -> list[str]:
        """References from correctly signed plus addresses (`support+T-1042.k3f9q@…`)."""
        return [ref for ref, signed in self.plus_tags(addresses, secret) if signed]

    def plus_tags(self, addresses: Iterable[str], secret: bytes) -> list[tuple[str, bool]]:
        """Every plus-address tag in the addresses, each once, in order: (reference, whether its
        signature is right). A tag that is wrong for one address and right for another is right."""
        pattern = re.compile(rf"\+{self._ref_pattern}\.([{_SIG_ALPHABET}]{{{SIGNATURE_LENGTH},16}})@", re.IGNORECASE)
        found: dict[str, bool] = {}
        for address in addresses:
            for m in pattern.finditer(address or ""):
                ref = self._canonical(m.group(1))
                found[ref] = found.get(ref, False) or _signature_ok(ref, m.group(2), secret)
        return list(found.items())

    def refs_in_tokens(self, text: str | None, secret: bytes) -> list[str]:
        """References from correctly signed tokens anywhere in a body (quoted or not)."""
        if not text:
            return []
        pattern = re.compile(
            rf"\[\s*ref:\s*{self._ref_pattern}\.([{_SIG_ALPHABET}]{{{SIGNATURE_LENGTH},16}})\s*\]", re.IGNORECASE)
        found = []
        for m in pattern.finditer(text):
            ref = self._canonical(m.group(1))
            if _signature_ok(ref, m.group(2), secret):
                found.append(ref)
        return _unique(found)


def _loose(literal: str) -> str:
    """A subject-format literal, tolerant of the spaces that mail clients add or drop."""
    return r"\s*".join(re.escape(ch) for ch in literal.strip())


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- Message-IDs --------------------------------------------------------------


def make_message_id(ticket_uuid: uuid.UUID | str, host: str) -> str:
    """Our own Message-ID: `<random-uuid.ticket-uuid@host>`."""
    return f"<{uuid.uuid4()}.{uuid.UUID(str(ticket_uuid))}@{host}>"


_OUR_MSGID_RE = re.compile(
    r"^<?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\."
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@([^>\s]+)>?$", re.IGNORECASE)


def ticket_uuid_from_message_id(message_id: str | None, host: str | None = None) -> str | None:
    """The ticket uuid inside one of our Message-IDs (optionally only for our host)."""
    m = _OUR_MSGID_RE.match((message_id or "").strip())
    if not m or (host is not None and m.group(2).lower() != host.lower()):
        return None
    return m.group(1).lower()


# -- subjects -------------------------------------------------------------------

# Reply and forward prefixes in the languages our customers' clients speak.
_PREFIXES = [
    # en, de, nl, scandinavian, fr, es/pt/it, pl, tr, el, ru/uk, cs, hu, hr/sr, fi, lt
    "re", "fwd", "fw", "aw", "wg", "antw", "antwort", "wtr", "doorst", "sv", "vs", "vb", "vl",
    "réf", "ref", "tr", "rv", "r", "rif", "i", "enc", "res", "rs", "odp", "pd", "ynt", "ilt",
    "σχετ", "πρθ", "отв", "атв", "пер", "fs", "továbbítás", "vá", "va", "odg", "npr", "ats",
]
_CJK_PREFIXES = ["回复", "回覆", "答复", "答覆", "转发", "轉寄", "转寄", "轉發", "返信", "転送", "회신", "전달"]
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:" + "|".join(sorted({re.escape(p) for p in _PREFIXES}, key=len, reverse=True))
    + r")\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]|(?:" + "|".join(map(re.escape, _CJK_PREFIXES))
    + r")\s*[:：]?)\s*",
    re.IGNORECASE)
_LIST_TAG_RE = re.compile(r"^\s*\[[^\]\[]{1,40}\]\s*")


def normalize_subject(subject: str | None, ref_format: RefFormat | None = None) -> str:
    """Subject for comparison: reply/forward prefixes (any language, repeated), our reference
    tag and folded whitespace removed, case folded."""
    text = " ".join((subject or "").split())
    if ref_format is not None:
        text = ref_format._subject_regex().sub(" ", text)
        text = " ".join(text.split())
    for _ in range(50):
        stripped = _PREFIX_RE.sub("", text, count=1)
        if stripped == text:
            # "[list] Re: x": a bracketed tag in front of a prefix hides it
            m = _LIST_TAG_RE.match(text)
            if m and _PREFIX_RE.match(text[m.end():]):
                stripped = text[: m.end()] + _PREFIX_RE.sub("", text[m.end():], count=1)
                if stripped == text:
                    break
            else:
                break
        text = stripped
    return " ".join(text.split()).casefold()

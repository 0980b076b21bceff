"""Turning mail bytes into text when the declared charset is wrong, unknown or missing.

Order: the declared charset (or the superset mail clients really mean by it) → UTF-8 →
charset-normalizer → chardet → UTF-8 with replacement characters. Detection only runs when
the cheap strict decodes fail, because detection is by far the slowest step.
"""
from __future__ import annotations

import codecs
import re

# Labels that senders declare while actually writing the Windows/extended superset
# (the same mapping web browsers apply); decoding with the superset never loses text.
_SUPERSETS = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-2022-jp": "iso2022_jp_ext",
    "big5": "big5hkscs",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-user-defined": "cp1252",
}

# Declared values that say nothing about the bytes.
_MEANINGLESS = {"", "unknown", "unknown-8bit", "x-unknown", "default", "none", "charset",
                "8bit", "7bit", "binary", "us"}

_DETECT_LIMIT = 64 * 1024
_MULTIBYTE = {"gb18030", "gbk", "gb2312", "cp932", "shift_jis", "euc_jp", "big5", "big5hkscs", "cp949",
              "euc_kr", "cp950", "shift_jis_2004", "shift_jisx0213", "euc_jis_2004"}


def normalize_charset(declared: str | None) -> str | None:
    """The codec name to try for a declared charset, or None when it is unusable."""
    if not declared:
        return None
    label = declared.strip().strip("\"'").lower()
    if label in _MEANINGLESS:
        return None
    label = _SUPERSETS.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError):
        return None


def detect_charset(data: bytes) -> str | None:
    """Best guess for undeclared or mis-declared bytes; None when nothing convinces."""
    sample = data[:_DETECT_LIMIT]
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        if best is not None and best.encoding:
            return normalize_charset(best.encoding) or best.encoding
    except Exception:  # a detector bug must not cost us the mail
        pass
    try:
        import chardet

        guess = chardet.detect(sample)
        if guess and guess.get("encoding") and (guess.get("confidence") or 0) >= 0.5:
            return normalize_charset(guess["encoding"])
    except Exception:
        pass
    return None


def decode_text(data: bytes, declared: str | None) -> tuple[str, str, str | None]:
    """Decode body bytes; returns (text, codec used, defect text or None)."""
    codec = normalize_charset(declared)
    if codec in ("cp1252", "iso8859-15") and not data.isascii():
        # Text that is valid UTF-8 is UTF-8 whatever its ASCII/Latin label says: real
        # Latin-1 prose almost never forms valid multi-byte sequences.
        text = _strict(data, "utf-8")
        if text is not None:
            return text, "utf-8", f"charset {declared!r} does not match the bytes; decoded as utf-8"
    if codec is not None:
        text = _strict(data, codec)
        if text is not None:
            return text, codec, None
        original = declared.strip().strip("\"'").lower() if declared else ""
        if original and original != codec:
            text = _strict(data, original)
            if text is not None:
                return text, original, None
    if data.isascii():
        if b"\x1b" in data:  # ISO-2022 escapes: Japanese/Korean mail that forgot its charset
            for codec in ("iso2022_jp_ext", "iso2022_jp_2", "iso2022_kr"):
                text = _strict(data, codec)
                if text is not None and "\x1b" not in text:
                    return text, codec, None
        return data.decode("ascii"), "ascii", None
    why = (f"charset {declared!r} does not match the bytes" if codec
           else f"charset {declared!r} unknown" if declared and declared.strip()
           else "no charset declared")
    text = _strict(data, "utf-8")
    if text is not None:
        declared_something = bool(declared and declared.strip().strip("\"'").lower() not in _MEANINGLESS)
        return text, "utf-8", (f"{why}; decoded as utf-8" if declared_something else None)
    guess = detect_charset(data)
    if guess:
        text = _strict(data, guess)
        if text is not None:
            return text, guess, f"{why}; detected {guess}"
    if codec:
        return data.decode(codec, "replace"), codec, f"{why}; undecodable bytes replaced"
    return data.decode("utf-8", "replace"), "utf-8", f"{why}; undecodable bytes replaced"


# The lone surrogates that surrogateescape makes of undecodable bytes (searched in C: bodies are long).
_ESCAPED_BYTE_RE = re.compile("[\udc80-\udcff]")


def has_surrogates(text: str) -> bool:
    return not text.isascii() and _ESCAPED_BYTE_RE.search(text) is not None


def repair_header_text(text: str, hint: str | None = None, guess: str | None = None) -> str:
    """Headers with raw 8-bit bytes come out of the stdlib as lone surrogates: decode them.

    `hint` is the message's body charset: senders that put raw 8-bit bytes in headers
    nearly always use the body's charset for them. `guess` is a detection already made
    over all of the message's raw headers (more bytes, better guess).
    """
    if not has_surrogates(text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    hinted = normalize_charset(hint)
    if guess is None:
        guess = detect_charset(raw)
    # Short strings fool detectors, except for CJK double-byte text, which they spot well;
    # otherwise the body's charset is the better bet, then Windows-1252.
    for codec in (hinted if hinted in _MULTIBYTE else None, guess if guess in _MULTIBYTE else None,
                  hinted if hinted not in ("ascii", "utf-8", "iso2022_jp", "iso2022_jp_ext", "utf-7") else None,
                  "cp1252"):
        if codec:
            try:
                return raw.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
    return raw.decode("utf-8", "replace")


def scrub(text: str) -> str:
    """Remove anything that cannot be stored as UTF-8 (lone surrogates, NUL)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if has_surrogates(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text

"""Everything the email layer understands about a message, as one JSON-ready dict.

Used by `flask mail explain` and by the corpus report; streams over any number of files.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .classify import classify
from .fingerprint import Fingerprints, fingerprints
from .parse import DEFAULT_MAX_SIZE, HEADER_READ_LIMIT, ParsedEmail, parse_email, parse_headers
from .parse.headers import Address
from .refs import REPLY_MARKER, RefFormat


def _address(address: Address | None) -> dict | None:
    return address.as_dict() if address else None


def _visible(parsed: ParsedEmail, waterlines: Sequence[str]) -> tuple[str, str | None]:
    """(visible text, visible html) from the cut helper; the full body when it is absent."""
    try:
        # At call time, not at the top: without the cut package the full body is shown
        # (the promise above; tests/mail/test_explain.py swaps the module to hold it).
        from .cut import cut_body
    except ImportError:
        return parsed.text, parsed.html
    try:
        cut = cut_body(parsed.text, parsed.html, waterlines=list(waterlines), marker=REPLY_MARKER)
        return cut.text, cut.html
    except Exception as exc:  # a cutting bug must not hide the mail
        parsed.add_defect(f"cut failed ({type(exc).__name__}): full text shown")
        return parsed.text, parsed.html


def explain_parsed(parsed: ParsedEmail, fingerprint: Fingerprints, *, file: str,
                   waterlines: Sequence[str] = (), ref_format: RefFormat | None = None,
                   secret: bytes = b"") -> dict:
    ref_format = ref_format or RefFormat()
    kind = classify(parsed)
    visible_text, _visible_html = _visible(parsed, waterlines)
    recipient_addresses = [a.address for a in parsed.to + parsed.cc + parsed.bcc]
    for name in ("delivered-to", "x-original-to", "envelope-to"):
        recipient_addresses.extend(parsed.header_all(name))
    html_text = parsed.html or ""
    return {
        "file": file,
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": list(parsed.references),
        "subject": parsed.subject,
        "from": _address(parsed.from_),
        "to": [a.as_dict() for a in parsed.to],
        "cc": [a.as_dict() for a in parsed.cc],
        "reply_to": [a.as_dict() for a in parsed.reply_to],
        "date": parsed.date.isoformat() if parsed.date else None,
        "auto_generated": kind.auto_generated,
        "auto_reason": kind.auto_reason,
        "bounce": kind.bounce,
        "bounced_recipients": list(kind.bounced_recipients),
        "bounce_permanent": kind.bounce_permanent,
        "bounce_original_message_id": kind.bounce_original_message_id,
        "out_of_office": kind.out_of_office,
        "priority": kind.priority,
        "text": parsed.text,
        "visible_text": visible_text,
        "html_safe": parsed.html_safe,
        "attachments": [a.as_dict() for a in parsed.attachments],
        "fingerprints": fingerprint.as_dict(),
        "refs": {
            "subject": ref_format.refs_in_subject(parsed.subject),
            "body": ref_format.refs_in_body(parsed.text),
            "plus": ref_format.refs_in_recipients(recipient_addresses, secret) if secret else [],
            "token": (ref_format.refs_in_tokens(parsed.text + "\n" + html_text, secret) if secret else []),
        },
        "size": parsed.raw_size,
        "defects": list(parsed.defects),
    }


def explain_message(raw: bytes, *, file: str, waterlines: Sequence[str] = (),
                    ref_format: RefFormat | None = None, secret: bytes = b"",
                    max_size: int = DEFAULT_MAX_SIZE) -> dict:
    """Parse, classify, fingerprint and cut one raw message. Never raises."""
    parsed = parse_email(raw, max_size=max_size)
    return explain_parsed(parsed, fingerprints(raw, parsed), file=file, waterlines=waterlines,
                          ref_format=ref_format, secret=secret)


def _walk(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files under each path in sorted path order, lazily (a directory is listed when reached)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            # Symlinked directories are skipped below the top level: they can loop.
            children = sorted(path.iterdir(), key=lambda p: p.name)
            yield from _walk(c for c in children if not (c.is_symlink() and c.is_dir()))
        else:
            yield path


def _explain_oversized(path: Path, size: int, *, max_size: int, **kwargs) -> dict:
    """Headers only, and a raw hash computed by streaming: the file is never held whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(HEADER_READ_LIMIT)
        digest.update(head)
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    parsed = parse_headers(head, size)
    parsed.add_defect(f"message is {size} bytes, over the {max_size}-byte limit: headers only")
    prints = fingerprints(b"", parsed)
    prints = Fingerprints(raw=digest.hexdigest(), content=prints.content, envelope=prints.envelope)
    return explain_parsed(parsed, prints, **kwargs)


def iter_explain_paths(paths: list[str], *, waterlines: Sequence[str] = (),
                       ref_format: RefFormat | None = None, secret: bytes = b"",
                       max_size: int = DEFAULT_MAX_SIZE) -> Iterator[dict]:
    """Explain every file under the given files/directories (any name, sorted), one at a time."""
    for path in _walk(paths):
        name = str(path)
        try:
            size = path.stat().st_size
            if size > max_size:
                yield _explain_oversized(path, size, max_size=max_size, file=name, waterlines=waterlines,
                                         ref_format=ref_format, secret=secret)
                continue
            raw = path.read_bytes()
        except OSError as exc:
            parsed = ParsedEmail()
            parsed.add_defect(f"cannot read file: {exc.strerror or exc}")
            yield explain_parsed(parsed, Fingerprints("", "", ""), file=name, waterlines=waterlines,
                                 ref_format=ref_format, secret=secret)
            continue
        yield explain_message(raw, file=name, waterlines=waterlines, ref_format=ref_format,
                              secret=secret, max_size=max_size)

"""Messages for the transport tests: varied bytes that a careless transport would change."""

from __future__ import annotations

import hashlib


def make_message(n: int, body_bytes: int = 0, *, extra: bytes = b"") -> bytes:
    """A CRLF message (IMAP returns CRLF, so the delivered bytes come back exactly)."""
    head = (
        b"From: Sender %d <sender%d@customer.example>\r\n"
        b"To: support@msp.example\r\n"
        b"Subject: =?utf-8?q?Drucker_kaputt_=E2=84=96?= %d\r\n"
        b"Message-ID: <m%d@customer.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" % (n, n, n, n)
    )
    # 8-bit text, a line that is only a dot (POP3 dot-stuffing), a line starting with a dot.
    body = b"Gr\xfc\xdfe aus K\xf6ln, Nachricht %d\r\n.\r\n..hidden dots\r\n" % n + extra
    if body_bytes:
        line = (b"x" * 76 + b"\r\n")
        body += line * (body_bytes // len(line) + 1)
    return head + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

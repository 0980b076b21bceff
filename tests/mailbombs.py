"""Mail built to hurt: the mail bombs of issue #20, for the fetch test
(tests/workers/test_mail_bombs_fetch.py) and the soak run that measures them (tests.soak.bombs)."""

import base64

from portal.mail.parse import DEFAULT_MAX_SIZE


def raw(subject: str, headers: str, body: str) -> bytes:
    return (f"From: alice@contoso.com\r\nTo: support@acme.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.split()[0]}@bomb.example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\n{headers}\r\n{body}\r\n").encode()


def forty_megabytes(size: int = DEFAULT_MAX_SIZE + 2**18) -> bytes:
    """About `size` bytes (by default just over the installation's 40 MB limit): a text part and
    one base64 attachment in lines."""
    data = base64.encodebytes(b"\0" * (size * 3 // 4)).replace(b"\n", b"\r\n")
    return raw("big", "Content-Type: multipart/mixed; boundary=B\r\n",
               "--B\r\nContent-Type: text/plain\r\n\r\nthe scan you asked for\r\n--B\r\n"
               "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=scan.tif\r\n\r\n" + data.decode() + "--B--")


def one_line(size: int) -> bytes:
    """An attachment whose base64 is `size` bytes in one line without breaks."""
    line = base64.b64encode(b"\0" * (size * 3 // 4))
    return (b"From: alice@contoso.com\r\nTo: support@acme.example\r\nSubject: line\r\n"
            b"Message-ID: <line@bomb.example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfile\r\n"
            b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=a.bin\r\n\r\n" + line + b"\r\n--B--\r\n")


def bombs() -> dict[str, bytes]:
    files = "".join(f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                    f"filename=f{i}.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n" for i in range(5_000))
    nested = "Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for i in range(1_000):
        nested = f"Content-Type: message/rfc822\r\n\r\nFrom: x{i}@e.example\r\nSubject: level {i}\r\n" + nested
    to = ", ".join(f"user{i}@r{i % 97}.example" for i in range(10_000))
    return {
        "attachments": raw("attachments", "Content-Type: multipart/mixed; boundary=B\r\n",
                           "--B\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n" + files + "--B--"),
        "nested": raw("nested", nested.split("\r\n\r\n", 1)[0] + "\r\n", nested.split("\r\n\r\n", 1)[1]),
        "subject": raw("subject " + "word " * 200_000, "Content-Type: text/plain\r\n", "a long subject"),
        "recipients": raw("recipients", f"Cc: {to}\r\nContent-Type: text/plain\r\n", "to everyone"),
        "deep": raw("deep", "Content-Type: text/html\r\n", "<div>" * 100_000 + "deep text" + "</div>" * 100_000),
        "attributes": raw("attributes", "Content-Type: text/html\r\n",
                          "<p " + " ".join(f'a{i}="{i}"' for i in range(100_000)) + ">attribute text</p>"),
        "line": one_line(4 * 2**20),  # tests.soak.bombs: 500 MB
        "big": forty_megabytes(),
    }

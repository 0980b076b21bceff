"""A few lines of IMAP that answer as Exchange Online does when a token is good but the mailbox
cannot be opened with it (IMAP disabled for the mailbox, no licence, or no permission for the
app): AUTHENTICATE XOAUTH2 succeeds, then SELECT and LIST get "BAD User is authenticated but not
connected.". Microsoft itself cannot be reached from the tests; this speaks its answers on loopback.
"""

from __future__ import annotations

import base64
import socketserver
import threading

GREETING = b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n"
CAPABILITY = b"* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE\r\n"


class _Session(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(GREETING)
        for line in self.rfile:
            tag, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
            command = rest.split(" ", 1)[0].upper()
            if command == "CAPABILITY":
                self.wfile.write(CAPABILITY + f"{tag} OK CAPABILITY completed.\r\n".encode())
            elif command == "AUTHENTICATE":
                self.wfile.write(b"+ \r\n")
                answer = base64.b64decode(self.rfile.readline().strip())
                self.server.logins.append(answer.split(b"\x01")[0].decode())  # "user=...", not the token
                self.wfile.write(f"{tag} OK AUTHENTICATE completed.\r\n".encode())
            elif command == "LOGOUT":
                self.wfile.write(f"* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n"
                                 f"{tag} OK LOGOUT completed.\r\n".encode())
                return
            else:
                self.wfile.write(f"{tag} BAD User is authenticated but not connected.\r\n".encode())


class ExchangeImap(socketserver.ThreadingTCPServer):
    """Use as a context manager; `.port` is where to connect, `.logins` the user= values seen."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Session)
        self.port = self.server_address[1]
        self.logins: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, name="exchange-imap", daemon=True)

    def __enter__(self) -> "ExchangeImap":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

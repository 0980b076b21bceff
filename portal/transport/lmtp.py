"""Where the LMTP listener (workers.lmtp) listens, and "Test connection" of an LMTP mailbox: is
that listener there? Plain Python. The address is the operator's (TIDEMARK_LMTP_LISTEN), never
one an MSP admin typed, so the server-reach rule does not apply to it."""

from __future__ import annotations

import smtplib
import socket

from portal.transport.probe import ProbeResult

NOT_CONFIGURED = ("Nothing to test here: an LMTP mailbox receives the mail your own mail server pushes to "
                  "Tidemark's LMTP listener (python -m workers.lmtp). The installation does not say where that "
                  "listener is (TIDEMARK_LMTP_LISTEN), so its operator can tell you the address for your MTA.")


def parse_listen(value: str) -> tuple[str, str | int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `unix:/path` → (host, port) or ("unix", path). Port 0: any free port."""
    value = (value or "").strip()
    if value.startswith("unix:"):
        path = value[5:]
        if not path.startswith("/"):
            raise ValueError("a Unix socket is given as unix:/absolute/path")
        return "unix", path
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen on HOST:PORT or unix:/path, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def probe_listener(listen: str | None, timeout: float = 5.0) -> ProbeResult:
    """Whether the listener at `listen` answers LHLO (nothing is sent). Without an address:
    ok, with the words that there is nothing to test."""
    if not listen:
        return ProbeResult(True, NOT_CONFIGURED)
    try:
        host, port = parse_listen(listen)
    except ValueError:
        return ProbeResult(False, f"The LMTP listener's address {listen!r} (TIDEMARK_LMTP_LISTEN) is not "
                                  "HOST:PORT or unix:/path: the operator should correct it.", kind="config")
    try:
        client = smtplib.LMTP(port if host == "unix" else host, 0 if host == "unix" else port, timeout=timeout)
        try:
            code, _ = client.ehlo()
        finally:
            client.close()
    except (OSError, smtplib.SMTPException, socket.timeout):
        return ProbeResult(False, f"The LMTP listener at {listen} does not answer: the operator should start "
                                  f"python -m workers.lmtp --listen {listen}.", kind="connect")
    if code != 250:
        return ProbeResult(False, f"Something at {listen} answers, but not like Tidemark's LMTP listener.",
                           kind="protocol")
    return ProbeResult(True, f"The LMTP listener at {listen} answers: point your mail server's LMTP delivery "
                             "for this mailbox's addresses there.")

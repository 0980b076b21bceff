"""POP3 sessions on the standard library's poplib.

POP3 deletes only when the session ends with QUIT, so leaving the `with` block on an error closes
the socket without QUIT: every DELE of that session is forgotten and the mail stays on the server.
"""

from __future__ import annotations

import base64
import logging
import poplib
import socket

from portal.transport import reach, sasl
from portal.transport.base import ServerSettings, TransportError, PopDropped, server_text, tls_context, translated

log = logging.getLogger("portal.transport.pop3")

# poplib refuses lines over 2,048 bytes; real mail (HTML bodies, long headers) has longer ones.
LINE_LIMIT = 1024 * 1024


class _LongLines:
    """poplib line reader with a generous limit, and a distinct error for a dropped connection."""

    def _getline(self):  # noqa: ANN202 - poplib's private hook
        line = self.file.readline(LINE_LIMIT + 1)
        if not line:
            raise PopDropped("the server closed the connection")
        if len(line) > LINE_LIMIT:
            raise poplib.error_proto(f"a line longer than {LINE_LIMIT} bytes")
        octets = len(line)
        if line.endswith(b"\r\n"):
            return line[:-2], octets
        if line.endswith(b"\n"):
            return line[:-1], octets
        return line, octets


class _POP3(_LongLines, poplib.POP3):
    """Connects to the checked addresses when given; `host` stays the name STLS verifies."""

    def __init__(self, host: str, port: int, *, timeout: float, addresses: list[str] | None = None):
        self._addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        if self._addresses is None:
            return super()._create_socket(timeout)
        return reach.connect(self._addresses, self.port, timeout)


class _POP3_SSL(_LongLines, poplib.POP3_SSL):
    def __init__(self, host: str, port: int, *, timeout: float, context, addresses: list[str] | None = None):
        self._addresses = addresses
        super().__init__(host, port, timeout=timeout, context=context)

    def _create_socket(self, timeout):
        if self._addresses is None:
            return super()._create_socket(timeout)
        sock = reach.connect(self._addresses, self.port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


class Pop3Session:
    """A logged-in POP3 connection. Use as a context manager; every failure is a TransportError."""

    def __init__(self, settings: ServerSettings):
        if settings.protocol != "pop3":
            raise ValueError("Pop3Session needs protocol 'pop3'")
        self.settings = settings
        self.capabilities: list[str] = []
        self._pop: poplib.POP3 | None = None
        self._pop = self._connect()

    def _connect(self) -> poplib.POP3:
        s = self.settings
        with translated(s, "connect"):
            addresses = reach.addresses_for(s)
            if s.security == "ssl":
                pop = _POP3_SSL(s.host, s.port, timeout=s.timeout, context=tls_context(s), addresses=addresses)
            else:
                pop = _POP3(s.host, s.port, timeout=s.timeout, addresses=addresses)
        try:
            if s.security == "starttls":
                with translated(s, "tls"):
                    caps = self._capa(pop)
                    if "STLS" not in caps:
                        raise TransportError(
                            "tls", f"{s.address} does not offer STLS; choose SSL/TLS or no encryption",
                            transient=False)
                    pop.stls(context=tls_context(s))
            with translated(s, "login"):
                if s.token:
                    self._token_login(pop)
                elif s.auth_identity:
                    # RFC 5034 AUTH with an initial response: authzid NUL authcid NUL password.
                    token = "\0".join([s.auth_identity, s.username, s.password]).encode("utf-8")
                    encoded = base64.b64encode(token).decode("ascii")
                    reply = pop._shortcmd("AUTH PLAIN " + encoded)
                    if not reply.startswith(b"+OK"):
                        # A "+ " challenge: this server wants the credentials on their own line.
                        pop._shortcmd(encoded)
                else:
                    pop.user(s.username)
                    pop.pass_(s.password)
            with translated(s, "reading the server capabilities"):
                self.capabilities = sorted(self._capa(pop))
        except BaseException:
            _close_quietly(pop)
            raise
        log.info("pop3 %s: logged in as %s (%s)", s.address, s.login_name, s.security)
        return pop

    def _token_login(self, pop: poplib.POP3) -> None:
        """RFC 5034 AUTH with XOAUTH2 or OAUTHBEARER (poplib has no helper for either).

        The token goes on its own line after the server's "+ ", as Microsoft documents it: a POP3
        command line may hold only 255 octets (RFC 2449), and a token is longer. On a refused token
        the server answers "+ <base64 JSON error>" and waits for an empty line before its -ERR;
        that -ERR (with the JSON's words) becomes the error.
        """
        s = self.settings
        caps = self._capa(pop)
        # Without CAPA (RFC 2449 makes it optional) we cannot tell: try XOAUTH2, the common one.
        mechanism = sasl.choose_mechanism(caps.get("SASL", [])) if caps else sasl.XOAUTH2
        if mechanism is None:
            raise TransportError("auth", sasl.missing_mechanism(s.address, "pop3"), transient=False)
        pop._shortcmd(f"AUTH {mechanism}")  # "+ " (an -ERR raises)
        reply = pop._shortcmd(sasl.encoded_response(mechanism, s.token_user, s.token))
        if reply.startswith(b"+OK"):
            return
        challenge = reply[1:].strip()
        try:
            pop._shortcmd("")
        except PopDropped:
            raise
        except poplib.error_proto as exc:
            words = sasl.challenge_words(challenge)
            raise poplib.error_proto(f"{server_text(exc)} ({words})" if words else server_text(exc)) from None
        raise poplib.error_proto("the server asked for more after the access token")

    @staticmethod
    def _capa(pop: poplib.POP3) -> dict:
        try:
            return pop.capa()
        except poplib.error_proto as exc:
            if isinstance(exc, PopDropped):
                raise
            return {}  # CAPA is optional (RFC 2449)

    def __enter__(self) -> "Pop3Session":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.quit()
        else:
            self.abort()

    def quit(self) -> None:
        """End the session with QUIT: the server now carries out the deletions."""
        pop, self._pop = self._pop, None
        if pop is None:
            return
        try:
            with translated(self.settings, "ending the session (QUIT)"):
                pop.quit()
        finally:
            _close_quietly(pop)

    def abort(self) -> None:
        """Drop the connection without QUIT, so nothing marked for deletion is deleted."""
        pop, self._pop = self._pop, None
        if pop is not None:
            _close_quietly(pop)

    close = abort

    def _p(self) -> poplib.POP3:
        if self._pop is None:
            raise TransportError("protocol", "the POP3 session is closed", transient=False)
        return self._pop

    def stat(self) -> tuple[int, int]:
        """(message count, total bytes)."""
        with translated(self.settings, "counting messages"):
            count, size = self._p().stat()
        return int(count), int(size)

    def listing(self) -> list[tuple[int, str, int]]:
        """(message number, UIDL, size) for every message, in message-number order."""
        with translated(self.settings, "listing messages"):
            pop = self._p()
            _resp, uid_lines, _ = pop.uidl()
            _resp, size_lines, _ = pop.list()
        uidls: dict[int, str] = {}
        for line in uid_lines:
            number, _, uidl = line.decode("ascii", "replace").strip().partition(" ")
            uidls[int(number)] = uidl.strip()
        rows = []
        for line in size_lines:
            number, _, size = line.decode("ascii", "replace").strip().partition(" ")
            n = int(number)
            if n in uidls:
                rows.append((n, uidls[n], int(size)))
        return sorted(rows)

    def retrieve(self, number: int) -> bytes:
        """The whole message, CRLF line endings, dot-stuffing undone."""
        with translated(self.settings, f"downloading message {number}"):
            _resp, lines, _octets = self._p().retr(int(number))
        if not lines:
            return b""
        return b"\r\n".join(lines) + b"\r\n"

    def delete(self, number: int) -> None:
        """Mark for deletion; the server deletes on a clean QUIT only."""
        with translated(self.settings, f"deleting message {number}"):
            self._p().dele(int(number))


def _close_quietly(pop: poplib.POP3) -> None:
    try:
        pop.close()
    except (OSError, socket.error):
        pass

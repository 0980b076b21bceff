"""IMAP sessions on imapclient: fetch by UID under UIDVALIDITY, then mark, move or delete."""

from __future__ import annotations

import imaplib
import logging
import select
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Iterator, Sequence

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, LoginError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS, wrap_socket

from portal.transport import reach, sasl
from portal.transport.base import ServerSettings, TransportError, server_text, scrub, tls_context, translated

log = logging.getLogger("portal.transport.imap")

# UIDs per STORE/COPY/MOVE/EXPUNGE command: keeps command lines far below server limits (64 KB).
UID_CHUNK = 500
# Sizes are asked for this many UIDs at a time before bodies are fetched in byte-bounded batches.
SIZE_CHUNK = 2000
DEFAULT_BATCH_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class FolderState:
    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class FetchedMessage:
    server_id: str  # str(uid) for IMAP, the UIDL for POP3
    raw: bytes | None  # None: larger than max_bytes, not downloaded
    size: int
    internal_date: datetime | None


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _clean_uids(uids: Sequence[int]) -> list[int]:
    return sorted({int(uid) for uid in uids})


class ImapSession:
    """A logged-in IMAP connection. Use as a context manager; every failure is a TransportError."""

    def __init__(self, settings: ServerSettings):
        if settings.protocol != "imap":
            raise ValueError("ImapSession needs protocol 'imap'")
        self.settings = settings
        self.folder: str | None = None
        self.readonly = False
        self._broken = False
        self._capabilities: frozenset[str] = frozenset()
        self._client = self._connect()

    # --- connection ------------------------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        s = self.settings
        timeout = SocketTimeout(connect=s.timeout, read=s.timeout)
        with translated(s, "connect"):
            client = _Client(
                s.host, port=s.port, ssl=s.security == "ssl",
                ssl_context=tls_context(s) if s.security == "ssl" else None,
                timeout=timeout, addresses=reach.addresses_for(s),
            )
        try:
            client.normalise_times = False  # keep the server's time zone on INTERNALDATE
            if s.security == "starttls":
                with translated(s, "tls"):
                    try:
                        client.starttls(tls_context(s))
                    except CapabilityError:
                        raise TransportError(
                            "tls", f"{s.address} does not offer STARTTLS; choose SSL/TLS or no encryption",
                            transient=False) from None
            self._login(client)
            with translated(s, "reading the server capabilities"):
                self._capabilities = frozenset(
                    c.decode("ascii", "replace").upper() for c in client.capabilities())
        except BaseException:
            _close_quietly(client)
            raise
        log.info("imap %s: logged in as %s (%s)", s.address, s.login_name, s.security)
        return client

    def _login(self, client: IMAPClient) -> None:
        s = self.settings
        with translated(s, "login"):
            pre_auth = {c.decode("ascii", "replace").upper() for c in client.capabilities()}
            if "LOGINDISABLED" in pre_auth and s.security == "none":
                raise TransportError(
                    "auth",
                    f"{s.address} refuses to log in {s.username} over an unencrypted connection; "
                    "choose STARTTLS or SSL/TLS",
                    transient=False)
            if s.token:
                self._token_login(client, pre_auth)
            elif s.auth_identity or not _ascii(s.username) or not _ascii(s.password):
                # SASL PLAIN carries the authorization identity and UTF-8; LOGIN carries neither.
                client.plain_login(s.username, s.password, s.auth_identity or None)
            else:
                client.login(s.username, s.password)

    def _token_login(self, client: IMAPClient, pre_auth: set[str]) -> None:
        """XOAUTH2, or OAUTHBEARER when that is all the server offers; user= is the mailbox to open."""
        s = self.settings
        offered = {c[len("AUTH="):] for c in pre_auth if c.startswith("AUTH=")}
        mechanism = sasl.choose_mechanism(offered)
        if mechanism is None:
            raise TransportError("auth", sasl.missing_mechanism(s.address, "imap"), transient=False)
        client.token_login(mechanism, s.token_user, s.token)

    @property
    def capabilities(self) -> list[str]:
        return sorted(self._capabilities)

    def has(self, capability: str) -> bool:
        return capability.upper() in self._capabilities

    def __enter__(self) -> "ImapSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Log out; a connection that is already dead is just closed."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._broken:
            _close_quietly(client)
            return
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - the connection may be gone already
            _close_quietly(client)

    @contextmanager
    def _io(self, stage: str) -> Iterator[None]:
        try:
            with translated(self.settings, stage):
                yield
        except TransportError as exc:
            if exc.transient:
                # Mid-response the protocol state is unknown: no polite LOGOUT (which would wait
                # for another timeout), and no further commands on this connection.
                self._broken = True
            raise

    def _c(self) -> IMAPClient:
        if self._client is None:
            raise TransportError("protocol", "the IMAP session is closed", transient=False)
        if self._broken:
            raise TransportError("connect", f"the connection to {self.settings.address} was lost earlier")
        return self._client

    # --- IDLE (RFC 2177): the server tells of new mail while the connection waits ---------------

    def idle(self) -> None:
        """Start waiting in IDLE on the selected folder. Raises TransportError when the server
        does not offer IDLE."""
        if not self.has("IDLE"):
            raise TransportError("protocol", f"{self.settings.address} does not offer IDLE", transient=False)
        with self._io("starting IDLE"):
            self._c().idle()

    def idle_wait(self, timeout: float) -> bool:
        """Wait in IDLE for at most `timeout` seconds. True when the server told of new mail (an
        EXISTS or RECENT response). A server that ends the connection (BYE, or it closes the
        socket) raises a transient TransportError: connect again."""
        client = self._c()
        with self._io("waiting in IDLE"):
            return _told_of_new_mail(_idle_lines(client, timeout))

    def idle_done(self) -> bool:
        """Leave IDLE (DONE) so that other commands may follow; True when new mail was told
        meanwhile."""
        with self._io("ending IDLE"):
            _text, responses = self._c().idle_done()
        return any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    # --- folders ---------------------------------------------------------------------------------

    def list_folders(self) -> list[str]:
        with self._io("listing folders"):
            rows = self._c().list_folders()
        names = []
        for flags, _delimiter, name in rows:
            flag_names = {f.decode("ascii", "replace").lower() if isinstance(f, bytes) else str(f).lower()
                          for f in flags}
            if "\\noselect" in flag_names or "\\nonexistent" in flag_names:
                continue
            names.append(str(name))
        return names

    def select(self, folder: str, readonly: bool = False) -> FolderState:
        s = self.settings
        client = self._c()
        try:
            response = client.select_folder(folder, readonly=readonly)
        except imaplib.IMAP4.abort as exc:
            with self._io(f"opening the folder {folder!r}"):
                raise exc
        except imaplib.IMAP4.error as exc:
            self.folder = None  # a failed SELECT leaves no folder selected (RFC 3501)
            said = server_text(exc)
            if sasl.NOT_CONNECTED.lower() in said.lower():  # Exchange: the login itself is of no use
                raise TransportError("auth", sasl.not_connected(s.address, s.login_name), transient=False) from exc
            raise TransportError(
                "folder", scrub(f"cannot open the folder {folder!r} on {s.address}: the server said {said}", s),
                transient=False) from exc
        except Exception as exc:  # noqa: BLE001 - socket errors, timeouts
            with self._io(f"opening the folder {folder!r}"):
                raise exc
        self.folder = folder
        self.readonly = readonly
        uidvalidity = response.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise TransportError("protocol", f"{s.address} did not report a UIDVALIDITY for {folder!r}",
                                 transient=False)
        return FolderState(
            name=folder,
            uidvalidity=int(uidvalidity),
            uidnext=int(response[b"UIDNEXT"]) if b"UIDNEXT" in response else None,
            exists=int(response.get(b"EXISTS", 0)),
        )

    def ensure_folder(self, folder: str) -> None:
        """Create the folder when it is missing (e.g. the processed folder)."""
        with self._io(f"creating the folder {folder!r}"):
            client = self._c()
            if client.folder_exists(folder):
                return
            try:
                client.create_folder(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                # Another poller may have created it meanwhile.
                if not client.folder_exists(folder):
                    raise TransportError(
                        "folder", scrub(f"cannot create the folder {folder!r} on {self.settings.address}: "
                                        f"the server said {server_text(exc)}", self.settings),
                        transient=False) from exc
            try:
                client.subscribe_folder(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                pass  # subscription only helps people who look with a mail program

    # --- reading ---------------------------------------------------------------------------------

    def uids_after(self, last_uid: int, *, since: date | None = None) -> list[int]:
        """UIDs greater than last_uid in the selected folder, ascending.

        Messages already flagged \\Deleted are left out. `since` (the sync start date) keeps only
        messages whose internal date is on or after that day.
        """
        criteria: list = ["UID", f"{int(last_uid) + 1}:*", "NOT", "DELETED"]
        if since is not None:
            if isinstance(since, datetime):
                since = since.date()
            criteria += ["SINCE", since]
        with self._io("searching for new messages"):
            found = self._c().search(criteria)
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(uid for uid in found if uid > last_uid)

    def fetch(self, uids: Sequence[int], *, batch_size: int = 200, max_bytes: int | None = None,
              batch_bytes: int = DEFAULT_BATCH_BYTES) -> Iterator[FetchedMessage]:
        """Yield the messages in ascending UID order with BODY.PEEK[] (\\Seen is left alone).

        Bodies come in batches of at most batch_size messages and about batch_bytes bytes, so
        memory stays flat. A message larger than max_bytes is not downloaded: it is yielded with
        raw=None and its size. UIDs that no longer exist are skipped.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        wanted = _clean_uids(uids)
        for chunk in _chunks(wanted, SIZE_CHUNK):
            with self._io("fetching message sizes"):
                meta = self._c().fetch(chunk, ["RFC822.SIZE", "INTERNALDATE"])
            batch: list[int] = []
            pending = 0
            for uid in chunk:
                item = meta.get(uid)
                if item is None or b"RFC822.SIZE" not in item:
                    continue  # expunged meanwhile
                size = int(item[b"RFC822.SIZE"])
                when = item.get(b"INTERNALDATE")
                if max_bytes is not None and size > max_bytes:
                    yield from self._fetch_bodies(batch, meta)
                    batch, pending = [], 0
                    yield FetchedMessage(str(uid), None, size, when)
                    continue
                if batch and (len(batch) >= batch_size or pending + size > batch_bytes):
                    yield from self._fetch_bodies(batch, meta)
                    batch, pending = [], 0
                batch.append(uid)
                pending += size
            yield from self._fetch_bodies(batch, meta)

    def _fetch_bodies(self, batch: list[int], meta: dict) -> Iterator[FetchedMessage]:
        if not batch:
            return
        with self._io("fetching messages"):
            bodies = self._c().fetch(batch, ["BODY.PEEK[]"])
        for uid in batch:
            raw = bodies.get(uid, {}).get(b"BODY[]")
            if raw is None:
                continue  # expunged between the size and the body fetch
            yield FetchedMessage(str(uid), bytes(raw), len(raw), meta[uid].get(b"INTERNALDATE"))

    # --- after processing ------------------------------------------------------------------------

    def mark_seen(self, uids: Sequence[int]) -> None:
        self._require_writable("mark messages as seen")
        with self._io("marking messages as seen"):
            for chunk in _chunks(_clean_uids(uids), UID_CHUNK):
                self._c().add_flags(chunk, [b"\\Seen"], silent=True)

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move exactly these UIDs to folder (created when missing)."""
        self._require_writable("move messages")
        wanted = _clean_uids(uids)
        if not wanted:
            return
        self.ensure_folder(folder)
        with self._io(f"moving messages to {folder!r}"):
            client = self._c()
            for chunk in _chunks(wanted, UID_CHUNK):
                if self.has("MOVE"):
                    client.move(chunk, folder)
                else:
                    client.copy(chunk, folder)
                    client.add_flags(chunk, [b"\\Deleted"], silent=True)
                    self._expunge(chunk)

    def delete(self, uids: Sequence[int]) -> None:
        """Delete exactly these UIDs (UID EXPUNGE when the server has UIDPLUS)."""
        self._require_writable("delete messages")
        with self._io("deleting messages"):
            for chunk in _chunks(_clean_uids(uids), UID_CHUNK):
                self._c().add_flags(chunk, [b"\\Deleted"], silent=True)
                self._expunge(chunk)

    def _expunge(self, uids: list[int]) -> None:
        if self.has("UIDPLUS"):
            self._c().uid_expunge(uids)
        else:
            # Without UIDPLUS this also expunges messages someone else flagged \Deleted.
            self._c().expunge()

    def _require_writable(self, what: str) -> None:
        if self.folder is None:
            raise TransportError("protocol", f"cannot {what}: no folder is selected", transient=False)
        if self.readonly:
            raise TransportError("folder", f"cannot {what}: the folder {self.folder!r} was opened read-only",
                                 transient=False)


class _Client(IMAPClient):
    """IMAPClient that connects to the checked addresses (when given) and verifies TLS for the
    host name, which imaplib keeps as `host` for the handshake and STARTTLS."""

    def __init__(self, *args, addresses: list[str] | None = None, **kwargs):
        self._addresses = addresses
        super().__init__(*args, **kwargs)

    def token_login(self, mechanism: str, user: str, token: str) -> None:
        """AUTHENTICATE XOAUTH2 or OAUTHBEARER. Unlike imapclient's oauth2_login, which answers every
        challenge with the token again, the server's JSON error challenge gets the empty line it
        asks for, and its words join the error."""
        errors: list[bytes] = []

        def respond(challenge: bytes) -> bytes:
            if challenge:
                errors.append(challenge)
                return b""
            return sasl.initial_response(mechanism, user, token)

        try:
            self._command_and_check("authenticate", mechanism, respond)
        except imaplib.IMAP4.error as exc:
            words = sasl.challenge_words(errors[-1]) if errors else ""
            raise LoginError(f"{server_text(exc)} ({words})" if words else server_text(exc)) from None

    def _create_IMAP4(self):  # noqa: N802 - imapclient's hook
        if self._addresses is None:
            return super()._create_IMAP4()
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _PinnedTls(self._addresses, self.host, self.port, self.ssl_context, connect_timeout)
        return _PinnedPlain(self._addresses, self.host, self.port, connect_timeout)


class _PinnedPlain(IMAP4WithTimeout):
    def __init__(self, addresses: list[str], host: str, port: int, timeout: float | None):
        self._addresses = addresses
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout=None):
        return reach.connect(self._addresses, self.port, timeout if timeout is not None else self._timeout)


class _PinnedTls(IMAP4_TLS):
    def __init__(self, addresses: list[str], host: str, port: int, ssl_context, timeout: float | None):
        self._addresses = addresses
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout=None):
        sock = reach.connect(self._addresses, self.port, timeout if timeout is not None else self._timeout)
        return wrap_socket(sock, self.ssl_context, self.host)


class ServerEnded(imaplib.IMAP4.abort):
    """The server ended the connection while we waited in IDLE (BYE or end of stream)."""


def _idle_lines(client: IMAPClient, timeout: float) -> list[bytes]:
    """The untagged lines the server sent within `timeout` seconds (none: it had nothing to say).
    imapclient's idle_check returns nothing at the end of the stream, which a watcher would take
    for silence and wait on for ever: here it raises ServerEnded."""
    sock = client.socket()
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    # TLS may already hold decrypted bytes that the socket will never signal again.
    buffered = getattr(sock, "pending", lambda: 0)() > 0
    if not buffered and not poller.poll(max(0, int(timeout * 1000))):
        return []
    lines: list[bytes] = []
    sock.setblocking(False)
    try:
        while True:
            try:
                line = client._imap._get_line()
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                break
            except imaplib.IMAP4.abort as exc:
                # Non-blocking, "EOF" also means "nothing more for now"; but a socket that poll()
                # called readable and that has nothing to read is at its end. (A line split across
                # two packets would also end up here: the watcher then connects again, and the
                # fetch it asks for on connecting misses nothing.)
                if "EOF" in str(exc) and lines:
                    break
                if "EOF" in str(exc):
                    raise ServerEnded("socket error: EOF (the server closed the connection)") from None
                raise
            if line.upper().startswith(b"* BYE"):
                raise ServerEnded(line.decode("utf-8", "replace"))
            lines.append(line)
    finally:
        sock.setblocking(True)
        client._set_read_timeout()
    return lines


def _told_of_new_mail(lines: list[bytes]) -> bool:
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == b"*" and parts[2].upper() in (b"EXISTS", b"RECENT"):
            return True
    return False


def _ascii(text: str) -> bool:
    return text.isascii()


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001 - nothing more to do with a broken connection
        pass

"""Microsoft Graph mail over HTTPS: delta queries per folder, raw MIME through `$value`, mark read,
move, and sendMail with the MIME we compose. Plain Python (requests; no Flask, SQLAlchemy or RQ).

Graph's limits are kept here, for every caller: at most 4 requests at once per mailbox in this
process (Exchange's MailboxConcurrency limit), 429/503/504 waited out as `Retry-After` says within a
bounded total wait (then a transient TransportError: the next poll goes on), and `@odata.nextLink`
followed. The token only ever goes to the API's own origin: a next or delta link naming another
host is refused. Every failure is a TransportError in plain words with Graph's error code.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.message import Message
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from portal.transport.base import TransportError
from portal.transport.imap import FetchedMessage
from portal.transport.reach import PinnedAdapter, Reach
from portal.transport.smtp import flatten
from portal.transport.urls import trusted_cas, url_refusal

log = logging.getLogger("portal.transport.graph")

CONCURRENCY = 4  # requests at once per mailbox: Graph answers 429 beyond
MAX_WAIT = 120.0  # seconds a session waits on Retry-After in all before giving up until the next poll
PAGE_SIZE = 100  # messages per delta page asked for (Prefer: odata.maxpagesize)
# Folders Graph names without an id; any other folder is found by its display name.
WELL_KNOWN_FOLDERS = frozenset({
    "inbox", "archive", "sentitems", "deleteditems", "drafts", "junkemail", "outbox", "clutter",
    "conversationhistory", "scheduled", "msgfolderroot"})
_RETRIED = (429, 503, 504)
_MAILBOX_MISSING = {"ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "MailboxNotFound", "ErrorNonExistentMailbox",
                    "ResourceNotFound"}


@dataclass(frozen=True)
class GraphSettings:
    """How to reach one mailbox through Graph. `mailbox`: the user id in the URL, the mailbox's own
    address (a shared mailbox's address opens the shared mailbox with a delegate's or the app's
    token)."""

    api_url: str
    mailbox: str
    token: str = field(repr=False)
    timeout: float = 30.0
    verify_tls: bool = True
    reach: Reach | None = field(default=None, repr=False)
    max_wait: float = MAX_WAIT
    protocol: str = "graph"

    def __post_init__(self) -> None:
        if refusal := url_refusal(self.api_url):
            raise ValueError(refusal)
        if not self.token:
            raise ValueError("Graph needs an access token")
        if not self.mailbox:
            raise ValueError("Graph needs the mailbox's address")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def host(self) -> str:
        return urlsplit(self.api_url).hostname or ""

    @property
    def address(self) -> str:
        return self.api_url

    @property
    def login_name(self) -> str:
        return self.mailbox


@dataclass(frozen=True)
class DeltaPage:
    ids: list[str]  # messages new or changed in the folder, in the server's order
    removed: list[str]  # messages that left the folder (moved, deleted)
    delta_link: str | None  # on the last page only: where the next round starts


class TokenRefused(TransportError):
    """Graph answered 401: the access token is not (or no longer) good."""

    def __init__(self, message: str):
        super().__init__("auth", message, transient=False)

    def __reduce__(self):
        return (type(self), (self.message,))


class DeltaExpired(TransportError):
    """The server forgot the delta link (410): the folder is read again from the start."""

    def __init__(self, message: str):
        super().__init__("protocol", message, transient=True)

    def __reduce__(self):
        return (type(self), (self.message,))


@dataclass(frozen=True)
class GraphSent:
    """What sendMail answered: Graph accepts the whole message or nothing."""

    mailbox: str
    refused: tuple = ()

    def describe(self) -> str:
        return f"accepted by Microsoft Graph for {self.mailbox}"


_limits: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_limits_lock = threading.Lock()


def _limit_for(settings: GraphSettings) -> threading.BoundedSemaphore:
    """One gate per mailbox in this process, shared by its fetch and its sending."""
    key = (settings.api_url.rstrip("/").lower(), settings.mailbox.lower())
    with _limits_lock:
        return _limits.setdefault(key, threading.BoundedSemaphore(CONCURRENCY))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait: Retry-After in seconds or as an HTTP date, else 2, 4, 8 ... up to 30."""
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return float(min(30, 2 ** attempt))


class _Answer:
    """An HTTP answer read whole inside the concurrency gate."""

    def __init__(self, status: int, headers, content: bytes, truncated: bool = False):
        self.status, self.headers, self.content, self.truncated = status, headers, content, truncated

    def json(self) -> dict:
        try:
            found = json.loads(self.content.decode("utf-8")) if self.content.strip() else {}
        except (UnicodeDecodeError, ValueError):
            found = None
        return found if isinstance(found, dict) else {}


class GraphSession:
    """One mailbox through Graph. Use as a context manager; every failure is a TransportError."""

    def __init__(self, settings: GraphSettings, *, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self._sleep = sleep
        self._waited = 0.0  # by every thread of this session together
        self._waiting = threading.Lock()
        self._limit = _limit_for(settings)
        self._root = f"{settings.api_url.rstrip('/')}/users/{quote(settings.mailbox, safe='@')}"
        self._folder_ids: dict[str, str] = {}
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy or CA bundle from the environment: the token goes where we say
        # With the address rule, every request goes only to addresses it checked (RefusedServer else).
        adapter = (PinnedAdapter(settings.reach, pool_maxsize=CONCURRENCY) if settings.reach is not None
                   else HTTPAdapter(pool_maxsize=CONCURRENCY))
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        self._http.headers.update({"Authorization": f"Bearer {settings.token}", "Accept": "application/json"})

    def __enter__(self) -> "GraphSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- requests --------------------------------------------------------------------------------

    def owns(self, url: str) -> bool:
        """Whether a URL is on the API's own origin: the only place the token goes."""
        return _origin(url) == _origin(self.settings.api_url)

    def call(self, method: str, url: str, *, params: dict | None = None, payload: dict | None = None,
             data: bytes | None = None, headers: dict | None = None, max_bytes: int | None = None,
             missing_ok: bool = False) -> _Answer | None:
        """One request, throttling waited out; None for a missing item when `missing_ok`."""
        if not self.owns(url):
            raise TransportError("protocol", f"Microsoft Graph sent a link to another server ({urlsplit(url).hostname});"
                                 " it was not followed", transient=False)
        attempt = 0
        while True:
            answer = self._send(method, url, params, payload, data, headers, max_bytes)
            if answer.status not in _RETRIED:
                break
            attempt += 1
            wait = retry_after(answer.headers.get("Retry-After"), attempt)
            with self._waiting:
                waited = self._waited
                if waited + wait <= self.settings.max_wait:
                    self._waited += wait
            if waited + wait > self.settings.max_wait:
                code, said = graph_error(answer)
                raise TransportError("connect", f"Microsoft Graph is busy for {self.settings.mailbox} (HTTP "
                                     f"{answer.status} {code}: {said}); waited {waited:g} seconds, the next "
                                     "poll goes on", transient=True)
            log.info("graph %s: HTTP %s, waiting %.1f s as Retry-After asks", self.settings.mailbox, answer.status, wait)
            self._sleep(wait)
        if answer.status >= 400:
            error = self._refusal(answer)
            if missing_ok and answer.status == 404 and error.kind == "folder":
                return None
            raise error
        return answer

    def _send(self, method, url, params, payload, data, headers, max_bytes) -> _Answer:
        s = self.settings
        with self._limit:
            try:
                response = self._http.request(method, url, params=params, json=payload, data=data, headers=headers,
                                              timeout=s.timeout, allow_redirects=False, stream=max_bytes is not None,
                                              verify=trusted_cas() if s.verify_tls else False)
                with response:
                    if max_bytes is None:
                        return _Answer(response.status_code, response.headers, response.content)
                    return _read_bounded(response, max_bytes)
            except requests.RequestException as exc:
                raise self._network(exc) from None
            except socket.gaierror:  # the address rule's lookup
                raise TransportError("connect", f"could not reach Microsoft Graph at {s.host}: its host name does "
                                     "not resolve") from None

    def _network(self, exc: requests.RequestException) -> TransportError:
        where = f"Microsoft Graph at {self.settings.host}"
        if isinstance(exc, requests.Timeout):
            return TransportError("timeout", f"{where} did not answer within {self.settings.timeout:g} seconds")
        if isinstance(exc, requests.exceptions.SSLError):
            return TransportError("tls", f"the TLS connection to {where} failed (certificate not trusted or "
                                  "protocol refused)", transient=False)
        cause, words = exc, type(exc).__name__
        while cause is not None:
            if isinstance(cause, OSError) and cause.strerror:
                words = cause.strerror
            cause = cause.__cause__ or cause.__context__
        return TransportError("connect", f"could not reach {where}: {words}")

    def _refusal(self, answer: _Answer) -> TransportError:
        code, said = graph_error(answer)
        who = self.settings.mailbox
        detail = f"{code}: {said}" if said else code
        if answer.status == 401:
            return TokenRefused(f"Microsoft Graph refused the access token for {who} ({detail}); if this lasts, "
                                "connect the mailbox again")
        if answer.status == 403 and code == "ErrorSendAsDenied":
            return TransportError("auth", f"Microsoft Graph refused to send from {who} as another address ({detail}): "
                                  "grant the mailbox Send As on the response address, or leave that empty",
                                  transient=False)
        if answer.status == 403:
            return TransportError("auth", f"the app has no permission to the mailbox {who} ({detail}): ask the "
                                  "customer's admin to grant it (Mail.ReadWrite and Mail.Send, with this mailbox in "
                                  "the app's scope)", transient=False)
        if answer.status == 404 and code in _MAILBOX_MISSING:
            return TransportError("auth", f"the mailbox {who} was not found at Microsoft Graph ({detail}): check its "
                                  "address (a shared mailbox: its own address)", transient=False)
        if answer.status == 404:
            return TransportError("folder", f"Microsoft Graph did not find it in {who} ({detail})", transient=False)
        if answer.status == 410:
            return DeltaExpired(f"Microsoft Graph forgot where the last fetch of {who} ended ({detail})")
        if answer.status >= 500:
            return TransportError("connect", f"Microsoft Graph failed for {who}: HTTP {answer.status} ({detail})")
        return TransportError("protocol", f"Microsoft Graph refused a request for {who}: HTTP {answer.status} "
                              f"({detail})", transient=False)

    def _json(self, method: str, url: str, **kw) -> dict:
        answer = self.call(method, url, **kw)
        return answer.json() if answer is not None else {}

    def _each(self, work: Callable[[str], object], ids: list[str]) -> list:
        """`work` on every id, at most CONCURRENCY at once (the gate holds any other caller too)."""
        if len(ids) <= 1:
            return [work(i) for i in ids]
        with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="graph") as pool:
            return list(pool.map(work, ids))

    # --- folders ---------------------------------------------------------------------------------

    def folder_path(self, name: str) -> str:
        """A well-known folder's name (inbox, archive, ...) as is; any other top-level folder by
        its display name, looked up once."""
        if name.lower() in WELL_KNOWN_FOLDERS:
            return name.lower()
        if name not in self._folder_ids:
            escaped = name.replace("'", "''")
            found = self._json("GET", f"{self._root}/mailFolders",
                               params={"$filter": f"displayName eq '{escaped}'", "$select": "id,displayName"})
            folders = found.get("value") or []
            if not folders:
                raise TransportError("folder", f"there is no folder named {name!r} in {self.settings.mailbox} "
                                     "(top-level folders are looked up by their display name)", transient=False)
            self._folder_ids[name] = folders[0]["id"]
        return quote(self._folder_ids[name], safe="")

    def inbox(self) -> dict:
        """The Inbox's counts: the connection test."""
        return self._json("GET", f"{self._root}/mailFolders/inbox")

    # --- reading ---------------------------------------------------------------------------------

    def delta(self, folder: str, link: str | None = None, *, since: date | None = None,
              page_size: int = PAGE_SIZE) -> Iterator[DeltaPage]:
        """The folder's messages page by page: all of them (received since `since`) without a
        link, else what changed after it. The last page carries the next round's delta link."""
        url, params = link, None
        if not url:
            url = f"{self._root}/mailFolders/{self.folder_path(folder)}/messages/delta"
            params = {"$select": "id,receivedDateTime,isRead"}
            if since is not None:
                params["$filter"] = f"receivedDateTime ge {since.isoformat()}T00:00:00Z"
        prefer = {"Prefer": f"odata.maxpagesize={page_size}"}
        while url:
            body = self._json("GET", url, params=params, headers=prefer)
            params = None
            items = body.get("value") or []
            ids = [i["id"] for i in items if isinstance(i, dict) and i.get("id") and "@removed" not in i]
            removed = [i["id"] for i in items if isinstance(i, dict) and i.get("id") and "@removed" in i]
            url = body.get("@odata.nextLink")
            delta_link = body.get("@odata.deltaLink")
            if not url and not delta_link:
                raise TransportError("protocol", f"Microsoft Graph's delta answer for {folder} has neither a next "
                                     "nor a delta link", transient=False)
            yield DeltaPage(ids, removed, None if url else delta_link)

    def fetch(self, ids: list[str], max_bytes: int) -> list[FetchedMessage]:
        """The raw MIME of each message (None when over max_bytes); a message gone meanwhile is left out."""
        def one(mid: str) -> FetchedMessage | None:
            answer = self.call("GET", f"{self._message(mid)}/$value", max_bytes=max_bytes, missing_ok=True)
            if answer is None:
                return None
            if answer.truncated:  # kept as a record of its size, as IMAP keeps an oversized message
                return FetchedMessage(server_id=mid, raw=None, size=max_bytes + 1, internal_date=None)
            return FetchedMessage(server_id=mid, raw=answer.content, size=len(answer.content), internal_date=None)
        return [f for f in self._each(one, ids) if f is not None]

    # --- telling the server ----------------------------------------------------------------------

    def mark_read(self, ids: list[str]) -> None:
        self._each(lambda mid: self.call("PATCH", self._message(mid), payload={"isRead": True}, missing_ok=True), ids)

    def move(self, ids: list[str], folder: str) -> None:
        destination = self.folder_path(folder)
        self._each(lambda mid: self.call("POST", f"{self._message(mid)}/move", payload={"destinationId": destination},
                                         missing_ok=True), ids)

    def send_mime(self, raw: bytes) -> GraphSent:
        """sendMail with the MIME as is (base64, text/plain): our headers, threading ones included,
        survive; the copy goes to this mailbox's own Sent Items."""
        self.call("POST", f"{self._root}/sendMail", data=base64.b64encode(raw), headers={"Content-Type": "text/plain"})
        return GraphSent(self.settings.mailbox)

    def _message(self, mid: str) -> str:
        return f"{self._root}/messages/{quote(mid, safe='')}"


def _read_bounded(response: requests.Response, max_bytes: int) -> _Answer:
    if response.status_code >= 300:
        return _Answer(response.status_code, response.headers, response.content)
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            return _Answer(response.status_code, response.headers, b"", truncated=True)
        chunks.append(chunk)
    return _Answer(response.status_code, response.headers, b"".join(chunks))


def graph_error(answer: _Answer) -> tuple[str, str]:
    """Graph's error code and message, or the HTTP status when the body has none."""
    error = answer.json().get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"]), str(error.get("message") or "").strip()
    return f"HTTP {answer.status}", ""


def send(settings: GraphSettings, message: Message) -> GraphSent:
    """Send one composed message through the mailbox (sendMail). Raises TransportError."""
    with GraphSession(settings) as session:
        return session.send_mime(flatten(message))


def probe(settings: GraphSettings) -> tuple[list[str], int, list[str], str]:
    """The connection test: (folders, messages in the Inbox, capabilities, where)."""
    with GraphSession(settings) as session:
        inbox = session.inbox()
        return [], int(inbox.get("totalItemCount") or 0), [], "the Inbox"

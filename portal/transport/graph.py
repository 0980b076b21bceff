"""Microsoft Graph mail over HTTPS: delta queries per folder, raw MIME through `$value`, mark read,
move, and sendMail with the MIME we compose. Plain Python (requests; no Flask, SQLAlchemy or RQ).

Graph's limits are kept here, for every caller: at most 4 requests at once per mailbox in this
process (Exchange's MailboxConcurrency limit), 429/503/504 waited out as `Retry-After` says (at least a
second) within a bounded total wait and at most MAX_TRIES tries (then Throttled, transient: the next
poll goes on; the sender sends without waiting), and `@odata.nextLink` followed. The token only ever goes to the API's own origin: a next or delta link naming another
host is refused. Every failure is a TransportError in plain words with Graph's error code.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from email.message import Message
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

import portal.faults as faults
from portal.transport.base import TransportError
from portal.transport.imap import FetchedMessage
from portal.transport.reach import PinnedAdapter, Reach
from portal.transport.smtp import flatten
from portal.transport.urls import (
    MAX_ANSWER,
    json_object,
    network_words,
    read_limited,
    size_words,
    trusted_cas,
    url_refusal,
)

log = logging.getLogger("portal.transport.graph")

CONCURRENCY = 4  # requests at once per mailbox: Graph answers 429 beyond
MAX_WAIT = 120.0  # seconds a session waits on Retry-After in all before giving up until the next poll
MIN_WAIT = 1.0  # a Retry-After of 0 or in the past still waits this long: no request loop without a pause
MAX_TRIES = 5  # throttled answers to one request before giving up until later, however short the waits
PAGE_SIZE = 100  # messages per delta page asked for (Prefer: odata.maxpagesize)
MAX_PAGES = 1000  # delta pages one round follows (100,000 messages) before it stops with an error
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
    delta_link: str | None  # on the last page only: where the next round starts
    # receivedDateTime per id, from the same answer (no request of its own): the server's receive time.
    received: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphSubscribed:
    """What Graph answered for a subscription it created or renewed."""

    id: str
    expires: datetime


def _subscribed(body: dict) -> GraphSubscribed:
    expires = graph_time(body.get("expirationDateTime"))
    if not body.get("id") or expires is None:
        raise TransportError("protocol", "Microsoft Graph's answer about a subscription has no id or no expiry",
                             transient=False)
    return GraphSubscribed(str(body["id"]), expires)


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


class Throttled(TransportError):
    """Graph stayed busy (429/503/504) beyond what this session may wait. `retry_after`: the seconds
    Graph last asked for, the earliest another try makes sense."""

    def __init__(self, message: str, retry_after: float = MIN_WAIT):
        super().__init__("connect", message, transient=True)
        self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after))


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
    """Seconds to wait: Retry-After in seconds or as an HTTP date, else 2, 4, 8 ... up to 30; never
    less than MIN_WAIT (0, or a date already past, would ask again at once)."""
    if value:
        value = value.strip()
        if value.isdigit():
            return max(MIN_WAIT, float(value))
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)  # RFC 9110 dates are GMT
            return max(MIN_WAIT, (when - datetime.now(timezone.utc)).total_seconds())
    return float(min(30, 2 ** attempt))


class _Answer:
    """An HTTP answer read inside the concurrency gate (at most MAX_ANSWER bytes, or a message's max_bytes)."""

    def __init__(self, status: int, headers, content: bytes, truncated: bool = False):
        self.status, self.headers, self.content, self.truncated = status, headers, content, truncated

    def json(self) -> dict:
        return json_object(self.content) or {}


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
             missing_ok: bool = False, gone_ok: bool = False) -> _Answer | None:
        """One request, throttling waited out; None for a missing item when `missing_ok`, for any
        404 when `gone_ok`."""
        if not self.owns(url):
            raise TransportError("protocol", f"Microsoft Graph sent a link to another server ({urlsplit(url).hostname});"
                                 " it was not followed", transient=False)
        attempt = 0
        while True:
            answer = self._send(method, url, params, payload, data, headers, max_bytes)
            if answer.status not in _RETRIED:
                break
            attempt += 1
            self._wait_out(answer, attempt)
        if answer.status >= 400:
            error = self._refusal(answer)
            if answer.status == 404 and (gone_ok or (missing_ok and error.kind == "folder")):
                return None
            raise error
        return answer

    def _wait_out(self, answer: _Answer, attempt: int) -> None:
        """Wait as a throttled answer asks, within MAX_TRIES and the session's max_wait; else Throttled."""
        wait = retry_after(answer.headers.get("Retry-After"), attempt)
        with self._waiting:
            waited = self._waited
            allowed = attempt < MAX_TRIES and waited + wait <= self.settings.max_wait
            if allowed:
                self._waited += wait
        if not allowed:
            code, said = graph_error(answer)
            tries = "1 try" if attempt == 1 else f"{attempt} tries"
            raise Throttled(f"Microsoft Graph is busy for {self.settings.mailbox} (HTTP {answer.status} {code}: "
                            f"{said}); gave up after {tries} and {waited:g} seconds of waiting, to try again "
                            f"later (next wait: {wait:g} s)", wait)
        log.info("graph %s: HTTP %s, waiting %.1f s as Retry-After asks", self.settings.mailbox, answer.status, wait)
        self._sleep(wait)

    def _send(self, method, url, params, payload, data, headers, max_bytes) -> _Answer:
        s = self.settings
        with self._limit:
            try:
                response = self._http.request(method, url, params=params, json=payload, data=data, headers=headers,
                                              timeout=s.timeout, allow_redirects=False, stream=True,
                                              verify=trusted_cas() if s.verify_tls else False)
                with response:
                    return self._read(response, max_bytes)
            except requests.RequestException as exc:
                raise self._network(exc) from None
            except socket.gaierror:  # the address rule's lookup
                raise TransportError("connect", f"could not reach Microsoft Graph at {s.host}: its host name does "
                                     "not resolve") from None

    def _read(self, response: requests.Response, max_bytes: int | None) -> _Answer:
        """The answer, read up to MAX_ANSWER bytes; a message's MIME (`max_bytes` given) up to
        max_bytes, beyond which it is a record of its size (truncated)."""
        status, found = response.status_code, response.headers
        whole = max_bytes is not None and status < 300
        content = read_limited(response, max_bytes if whole else MAX_ANSWER)
        if content is not None:
            return _Answer(status, found, content)
        if whole:
            return _Answer(status, found, b"", truncated=True)
        if status >= 300:
            return _Answer(status, found, b"")  # a refusal too long to read: its status says it
        raise TransportError("protocol", f"Microsoft Graph's answer for {self.settings.mailbox} is larger than "
                             f"{size_words(MAX_ANSWER)}: it was not read", transient=False)

    def _network(self, exc: requests.RequestException) -> TransportError:
        words = f"could not reach Microsoft Graph at {self.settings.host}: {network_words(exc, self.settings.timeout)}"
        if isinstance(exc, requests.Timeout):
            return TransportError("timeout", words)
        if isinstance(exc, requests.exceptions.SSLError):
            return TransportError("tls", words, transient=False)
        return TransportError("connect", words)

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
        seen: set[str] = set()
        while url:
            self._next_page(folder, url, seen)
            body = self._json("GET", url, params=params, headers=prefer)
            params = None
            items = body.get("value") or []
            ids = [i["id"] for i in items if isinstance(i, dict) and i.get("id") and "@removed" not in i]
            received = {i["id"]: when for i in items if isinstance(i, dict) and i.get("id")
                        and (when := graph_time(i.get("receivedDateTime"))) is not None}
            url = body.get("@odata.nextLink")
            delta_link = body.get("@odata.deltaLink")
            if not url and not delta_link:
                raise TransportError("protocol", f"Microsoft Graph's delta answer for {folder} has neither a next "
                                     "nor a delta link", transient=False)
            yield DeltaPage(ids, None if url else delta_link, received)

    def _next_page(self, folder: str, url: str, seen: set[str]) -> None:
        """Stop a round that would not end: a next link already followed, or MAX_PAGES pages."""
        where = f"Microsoft Graph's delta round for {folder} in {self.settings.mailbox}"
        if url in seen:
            log.warning("graph %s %s: a next link came back a second time; round stopped", self.settings.mailbox,
                        folder)
            raise TransportError("protocol", f"{where} sent a next link it had sent before (after {len(seen)} "
                                 "pages): stopped so as not to go round forever; the mail read so far is kept and "
                                 "the next poll starts the round again")
        if len(seen) >= MAX_PAGES:
            log.warning("graph %s %s: more than %d pages in one round; round stopped", self.settings.mailbox,
                        folder, MAX_PAGES)
            raise TransportError("protocol", f"{where} went on for more than {MAX_PAGES} pages: stopped; the mail "
                                 "read so far is kept and the next poll goes on (a folder this large: set the "
                                 "mailbox's \"Skip mail dated before\")")
        seen.add(url)

    def fetch(self, ids: list[str], max_bytes: int, received: dict[str, datetime] | None = None) -> list[FetchedMessage]:
        """The raw MIME of each message (None when over max_bytes); a message gone meanwhile is left out.
        `received`: the delta page's receivedDateTime per id, carried on as each one's receive time."""
        received = received or {}

        def one(mid: str) -> FetchedMessage | None:
            answer = self.call("GET", f"{self._message(mid)}/$value", max_bytes=max_bytes, missing_ok=True)
            if answer is None:
                return None
            if answer.truncated:  # kept as a record of its size, as IMAP keeps an oversized message
                return FetchedMessage(server_id=mid, raw=None, size=max_bytes + 1, internal_date=received.get(mid))
            return FetchedMessage(server_id=mid, raw=answer.content, size=len(answer.content),
                                  internal_date=received.get(mid))
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

    def in_sent_items(self, message_id: str) -> bool:
        """Whether the mailbox's Sent Items holds a message with this Message-ID: sendMail's copy,
        kept there by default (saveToSentItems), names what Graph took."""
        literal = message_id.replace("'", "''")  # OData's quoting inside a string literal
        found = self._json("GET", f"{self._root}/mailFolders/sentitems/messages",
                           params={"$filter": f"internetMessageId eq '{literal}'", "$select": "id", "$top": "1"})
        return bool(found.get("value"))

    def _message(self, mid: str) -> str:
        return f"{self._root}/messages/{quote(mid, safe='')}"

    # --- change notifications --------------------------------------------------------------------

    def subscribe(self, folder: str, *, notification_url: str, lifecycle_url: str, client_state: str,
                  expires: datetime) -> GraphSubscribed:
        """Ask Graph to tell `notification_url` of every message created in the folder. Graph checks
        that URL (its validation handshake) before it answers; a failed handshake is its refusal."""
        mailbox = quote(self.settings.mailbox, safe="@")
        body = {"changeType": "created", "notificationUrl": notification_url, "lifecycleNotificationUrl": lifecycle_url,
                "resource": f"users/{mailbox}/mailFolders('{self.folder_path(folder)}')/messages",
                "expirationDateTime": graph_time_text(expires), "clientState": client_state,
                "latestSupportedTlsVersion": "v1_2"}
        return _subscribed(self._json("POST", self._subscriptions(), payload=body))

    def renew(self, subscription_id: str, expires: datetime) -> GraphSubscribed | None:
        """The subscription's new expiry; None when Graph no longer knows it (removed or expired)."""
        answer = self.call("PATCH", self._subscriptions(subscription_id), gone_ok=True,
                           payload={"expirationDateTime": graph_time_text(expires)})
        return _subscribed(answer.json()) if answer is not None else None

    def reauthorize(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired lifecycle event with this (fresh) token."""
        self.call("POST", f"{self._subscriptions(subscription_id)}/reauthorize", gone_ok=True)

    def unsubscribe(self, subscription_id: str) -> None:
        """Delete the subscription; one Graph no longer knows is gone already."""
        self.call("DELETE", self._subscriptions(subscription_id), gone_ok=True)

    def _subscriptions(self, subscription_id: str | None = None) -> str:
        root = f"{self.settings.api_url.rstrip('/')}/subscriptions"
        return f"{root}/{quote(subscription_id, safe='')}" if subscription_id else root


def graph_time(value) -> datetime | None:
    """Graph's ISO 8601 time ("2026-11-20T09:15:00Z") as an aware datetime; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def graph_time_text(when: datetime) -> str:
    """An aware datetime as Graph writes times: UTC, with Z."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def graph_error(answer: _Answer) -> tuple[str, str]:
    """Graph's error code and message, or the HTTP status when the body has none."""
    error = answer.json().get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"]), str(error.get("message") or "").strip()
    return f"HTTP {answer.status}", ""


def send(settings: GraphSettings, message: Message, *, hand_over: Callable[[], None] | None = None) -> GraphSent:
    """Send one composed message through the mailbox (sendMail). Raises TransportError. Never waits
    on throttling: one sender serves every MSP, so a busy mailbox raises Throttled at once, whose
    `retry_after` says when to try again. hand_over, when given, is called just before the request
    that may send it (as for SMTP: after a crash from there on, nobody can tell whether it went)."""
    with GraphSession(replace(settings, max_wait=0.0)) as session:
        faults.reached("mid-send")  # signed in, the message not yet handed over
        raw = flatten(message)
        if hand_over is not None:
            hand_over()
        sent = session.send_mime(raw)
        faults.reached("after-send")
        faults.reached("after-sendmail")
        return sent


def in_sent_items(settings: GraphSettings, message_id: str) -> bool:
    """Whether the mailbox sent the message with this Message-ID (its copy is in Sent Items). Never
    waits on throttling, as send does. Raises TransportError."""
    with GraphSession(replace(settings, max_wait=0.0)) as session:
        return session.in_sent_items(message_id)


def probe(settings: GraphSettings) -> tuple[list[str], int, list[str], str]:
    """The connection test: (folders, messages in the Inbox, capabilities, where)."""
    with GraphSession(settings) as session:
        inbox = session.inbox()
        return [], int(inbox.get("totalItemCount") or 0), [], "the Inbox"

"""A local Microsoft Graph mail API on loopback (Flask in a thread), memory only.

Microsoft cannot be reached from the tests, so this server answers the requests the connector
makes with the request and response shapes Microsoft documents for Graph v1.0 (`server.api_url`
is `http://127.0.0.1:<port>/v1.0`):
- `GET /users/{id}/mailFolders/{folder}/messages/delta`: pages of `value` with `@odata.nextLink`
  (`Prefer: odata.maxpagesize=N` sets the page size, echoed in `Preference-Applied`), the last page
  with `@odata.deltaLink`; a call with that link answers only messages added or changed since
  (a changed one: marked read), and `{"id": ..., "@removed": {"reason": "deleted"}}` for those that
  left the folder. `$filter=receivedDateTime ge <ISO date>` limits the first round. A delta link
  forgotten by `expire_delta_links()` answers 410 `SyncStateNotFound`.
- `GET /users/{id}/messages/{mid}/$value`: the raw MIME;
- `PATCH /users/{id}/messages/{mid}` with `{"isRead": true}`;
- `POST /users/{id}/messages/{mid}/move` with `{"destinationId": ...}` (a folder id or a well-known
  name: inbox, archive, sentitems, ...): 201 with the moved message under a new id, as Exchange does;
- `GET /users/{id}/mailFolders?$filter=displayName eq 'X'` and `GET /users/{id}/mailFolders/{folder}`;
- `POST /users/{id}/sendMail` with a base64 MIME body (`Content-Type: text/plain`): 202, and a copy
  in that user's (that shared mailbox's) Sent Items; every send is in `sent` as (user, bytes).

Every request needs `Authorization: Bearer <token>`: a token in `tokens`, or one the `oauth_server`
fixture issued when `introspection_url` names its introspection endpoint. Errors have Graph's shape
`{"error": {"code", "message", "innerError"}}`: 401 `InvalidAuthenticationToken`, 403
`ErrorAccessDenied` (`deny(user)`), 404 `ErrorInvalidUser` (a mailbox never added), 404
`ErrorItemNotFound`.

Test controls: `add_mailbox(user)`, `deliver(user, raw, folder="inbox")`, `add_folder(user, name)`,
`folder(user, name)` (the messages there), `fail_next(status, retry_after=..., times=N, path=...)`
(throttling: 429 `TooManyRequests`, 503 `ServiceUnavailable`), `refuse(token)` (401 for it),
`delay` (seconds each request takes, to see concurrency), `max_in_flight`, `requests` (method,
path, query), `reset()`. Fixtures: `graph_server_session` (one per run), `graph_server` (emptied).
"""

from __future__ import annotations

import base64
import email
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["GraphServer", "graph_server", "graph_server_session"]

WELL_KNOWN = {"inbox": "Inbox", "archive": "Archive", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
              "drafts": "Drafts", "junkemail": "Junk Email"}
DEFAULT_PAGE = 10  # Exchange's own default for message delta pages


def graph_id(prefix: str = "AAMkAGI2") -> str:
    """Ids shaped as Exchange's: long, URL-safe base64."""
    return prefix + secrets.token_urlsafe(105)


@dataclass
class Msg:
    id: str
    raw: bytes
    received: datetime
    is_read: bool = False
    seq: int = 0  # the change number of its last change


@dataclass
class Folder:
    id: str
    name: str
    well_known: str | None = None
    messages: dict[str, Msg] = field(default_factory=dict)
    removed: list[tuple[int, str]] = field(default_factory=list)  # (change number, id)


def error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = {"error": {"code": code, "message": message,
                      "innerError": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "request-id": secrets.token_hex(16)}}}
    answer = jsonify(body)
    answer.status_code = status
    for name, value in (headers or {}).items():
        answer.headers[name] = value
    return answer


class GraphServer:
    """The mailboxes and the test controls; `url` and `api_url` once started."""

    def __init__(self):
        self.lock = threading.RLock()
        self.url = ""
        self.reset()

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1.0"

    def reset(self):
        with self.lock:
            self.mailboxes: dict[str, dict[str, Folder]] = {}
            self.tokens: set[str] = set()
            self.refused: set[str] = set()
            self.denied: set[str] = set()
            self.introspection_url: str | None = None
            self.failures: list[dict] = []
            self.sent: list[tuple[str, bytes]] = []
            self.requests: list[tuple[str, str, dict]] = []
            self.delay = 0.0
            self.in_flight = 0
            self.max_in_flight = 0
            self.changes = itertools.count(1)
            self.pages: dict[str, tuple[list[dict], str]] = {}  # skiptoken: (entries left, delta token)
            self.deltas: dict[str, tuple[str, str, int]] = {}  # deltatoken: (user, folder id, change number)

    # --- test controls -----------------------------------------------------------------------------

    def add_mailbox(self, user: str) -> None:
        with self.lock:
            folders = self.mailboxes.setdefault(user.lower(), {})
            for well_known, name in WELL_KNOWN.items():
                if not any(f.well_known == well_known for f in folders.values()):
                    folder = Folder(graph_id("AQMkFolder"), name, well_known)
                    folders[folder.id] = folder

    def add_folder(self, user: str, name: str) -> str:
        with self.lock:
            folder = Folder(graph_id("AQMkFolder"), name)
            self.mailboxes[user.lower()][folder.id] = folder
            return folder.id

    def deliver(self, user: str, raw: bytes, folder: str = "inbox", is_read: bool = False) -> str:
        with self.lock:
            self.add_mailbox(user)
            target = self._folder(user.lower(), folder)
            try:
                received = parsedate_to_datetime(email.message_from_bytes(raw)["Date"])
            except (TypeError, ValueError):
                received = datetime.now(timezone.utc)
            msg = Msg(graph_id(), raw, received.astimezone(timezone.utc), is_read, next(self.changes))
            target.messages[msg.id] = msg
            return msg.id

    def folder(self, user: str, name: str = "inbox") -> list[Msg]:
        """The messages in a folder named by its id, well-known name or display name."""
        with self.lock:
            named = [f for f in self.mailboxes[user.lower()].values() if f.name == name]
            return list((named[0] if named else self._folder(user.lower(), name)).messages.values())

    def fail_next(self, status: int = 429, *, retry_after: str | int | None = None, times: int = 1,
                  path: str = "", code: str | None = None) -> None:
        """The next `times` requests whose path holds `path` answer `status` (with Retry-After)."""
        codes = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        with self.lock:
            for _ in range(times):
                self.failures.append({"status": status, "retry_after": retry_after, "path": path,
                                      "code": code or codes.get(status, "ErrorInternalServerError")})

    def refuse(self, token: str) -> None:
        with self.lock:
            self.refused.add(token)

    def deny(self, user: str) -> None:
        with self.lock:
            self.denied.add(user.lower())

    def expire_delta_links(self) -> None:
        with self.lock:
            self.deltas.clear()

    # --- reading the mailbox -------------------------------------------------------------------------

    def _folder(self, user: str, name: str) -> Folder:
        folders = self.mailboxes[user]
        if name in folders:
            return folders[name]
        for folder in folders.values():
            if folder.well_known == name.lower():
                return folder
        raise KeyError(name)

    def _find(self, user: str, mid: str) -> tuple[Folder, Msg] | None:
        for folder in self.mailboxes[user].values():
            if mid in folder.messages:
                return folder, folder.messages[mid]
        return None

    def _message(self, user: str, mid: str) -> tuple[Folder, Msg] | Response:
        """The message and its folder, or Graph's refusal (token, mailbox) or its 404."""
        found = self._gate(user) or self._find(user.lower(), mid)
        if found is None:
            return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return found

    def _resource(self, msg: Msg, folder: Folder) -> dict:
        parsed = email.message_from_bytes(msg.raw)
        return {"@odata.type": "#microsoft.graph.message", "@odata.etag": f'W/"CQAAABYAAA{msg.seq}"',
                "id": msg.id, "receivedDateTime": msg.received.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "subject": parsed["Subject"] or "", "isRead": msg.is_read, "parentFolderId": folder.id,
                "internetMessageId": parsed["Message-ID"]}

    def _folder_resource(self, user: str, folder: Folder) -> dict:
        return {"id": folder.id, "displayName": folder.name, "parentFolderId": "AQMkRoot", "childFolderCount": 0,
                "unreadItemCount": sum(not m.is_read for m in folder.messages.values()),
                "totalItemCount": len(folder.messages), "isHidden": False}

    def _changed(self, msg: Msg) -> None:
        msg.seq = next(self.changes)

    # --- the app -------------------------------------------------------------------------------------

    def _gate(self, user: str | None):
        """Token, throttling, the mailbox: an error answer, or None to go on."""
        with self.lock:
            self.requests.append((request.method, request.path, dict(request.args)))
            for i, failure in enumerate(self.failures):
                if failure["path"] in request.path:
                    del self.failures[i]
                    headers = {"Retry-After": str(failure["retry_after"])} if failure["retry_after"] is not None else {}
                    return error(failure["status"], failure["code"], "Application is over its MailboxConcurrency "
                                 "limit." if failure["status"] == 429 else "The service is unavailable.", headers)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            return error(401, "InvalidAuthenticationToken", "Access token is empty.")
        if token in self.refused or not self._token_ok(token):
            return error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
        if user is None:
            return None
        if user.lower() not in self.mailboxes:
            return error(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        if user.lower() in self.denied:
            return error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return None

    def _token_ok(self, token: str) -> bool:
        if token in self.tokens:
            return True
        if self.introspection_url:
            answer = requests.post(self.introspection_url, data={"token": token}, timeout=10).json()
            return bool(answer.get("active"))
        return False

    def _delta(self, user: str, folder_name: str):
        user = user.lower()
        page_size = DEFAULT_PAGE
        prefer = request.headers.get("Prefer", "")
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                page_size = int(value)
        with self.lock:
            if "$skiptoken" in request.args:
                entries, delta = self.pages.pop(request.args["$skiptoken"], (None, None))
                if entries is None:
                    return error(400, "ErrorInvalidUrlQuery", "The skip token is not valid.")
            else:
                try:
                    folder = self._folder(user, folder_name)
                except KeyError:
                    return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                entries = self._entries(user, folder)
                if isinstance(entries, Response):
                    return entries
                delta = secrets.token_urlsafe(24)
                self.deltas[delta] = (user, folder.id, next(self.changes))
            page, rest = entries[:page_size], entries[page_size:]
            base = f"{self.api_url}/users/{user}/mailFolders/{folder_name}/messages/delta"
            body = {"@odata.context": f"{self.api_url}/$metadata#Collection(message)", "value": page}
            if rest:
                skip = secrets.token_urlsafe(24)
                self.pages[skip] = (rest, delta)
                body["@odata.nextLink"] = f"{base}?$skiptoken={skip}"
            else:
                body["@odata.deltaLink"] = f"{base}?$deltatoken={delta}"
        answer = jsonify(body)
        if prefer:
            answer.headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
        return answer

    def _entries(self, user: str, folder: Folder):
        if "$deltatoken" in request.args:
            known = self.deltas.get(request.args["$deltatoken"])
            if known is None:
                return error(410, "SyncStateNotFound", "The sync state generation is not found.")
            _user, _folder, since = known
            entries = [self._resource(m, folder) for m in folder.messages.values() if m.seq > since]
            entries += [{"@odata.type": "#microsoft.graph.message", "id": mid, "@removed": {"reason": "deleted"}}
                        for seq, mid in folder.removed if seq > since]
            return entries
        since = None
        flt = request.args.get("$filter", "")
        if flt.startswith("receivedDateTime ge "):
            since = datetime.fromisoformat(flt.rpartition(" ")[2].replace("Z", "+00:00"))
        return [self._resource(m, folder) for m in folder.messages.values() if since is None or m.received >= since]

    def create_app(self) -> Flask:
        app = Flask("graph-server")
        api = "/v1.0/users/<user>"

        def delta(user, folder):
            return self._gate(user) or self._delta(user, folder)

        def value(user, mid):
            with self.lock:
                found = self._message(user, mid)
                if isinstance(found, Response):
                    return found
                return Response(found[1].raw, content_type="text/plain")

        def patch(user, mid):
            with self.lock:
                found = self._message(user, mid)
                if isinstance(found, Response):
                    return found
                folder, msg = found
                if "isRead" in (request.get_json(silent=True) or {}):
                    msg.is_read = bool(request.get_json()["isRead"])
                    self._changed(msg)
                return jsonify(self._resource(msg, folder))

        def move(user, mid):
            with self.lock:
                found = self._message(user, mid)
                if isinstance(found, Response):
                    return found
                destination = (request.get_json(silent=True) or {}).get("destinationId", "")
                try:
                    target = self._folder(user.lower(), destination)
                except KeyError:
                    return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                folder, msg = found
                del folder.messages[mid]
                folder.removed.append((next(self.changes), mid))
                moved = Msg(graph_id(), msg.raw, msg.received, msg.is_read, next(self.changes))
                target.messages[moved.id] = moved
                return jsonify(self._resource(moved, target)), 201

        def folders(user):
            with self.lock:
                refused = self._gate(user)
                if refused:
                    return refused
                found = list(self.mailboxes[user.lower()].values())
                flt = request.args.get("$filter", "")
                if flt.startswith("displayName eq '"):
                    name = flt[len("displayName eq '"):-1].replace("''", "'")
                    found = [f for f in found if f.name == name]
                return jsonify({"value": [self._folder_resource(user, f) for f in found]})

        def one_folder(user, folder):
            with self.lock:
                refused = self._gate(user)
                if refused:
                    return refused
                try:
                    return jsonify(self._folder_resource(user, self._folder(user.lower(), folder)))
                except KeyError:
                    return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")

        def send_mail(user):
            with self.lock:
                refused = self._gate(user)
                if refused:
                    return refused
                if not request.content_type or not request.content_type.startswith("text/plain"):
                    return error(400, "ErrorInvalidRequest", "A MIME message is sent as base64 in text/plain.")
                try:
                    raw = base64.b64decode(request.get_data(), validate=True)
                except ValueError:
                    return error(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
                self.sent.append((user.lower(), raw))
                self.deliver(user, raw, folder="sentitems", is_read=True)
                return Response(status=202)

        app.add_url_rule(f"{api}/mailFolders/<folder>/messages/delta", "delta", delta)
        app.add_url_rule(f"{api}/messages/<mid>/$value", "value", value)
        app.add_url_rule(f"{api}/messages/<mid>", "patch", patch, methods=["PATCH"])
        app.add_url_rule(f"{api}/messages/<mid>/move", "move", move, methods=["POST"])
        app.add_url_rule(f"{api}/mailFolders", "folders", folders)
        app.add_url_rule(f"{api}/mailFolders/<folder>", "one_folder", one_folder)
        app.add_url_rule(f"{api}/sendMail", "send_mail", send_mail, methods=["POST"])
        app.wsgi_app = self._counting(app.wsgi_app)
        return app

    def _counting(self, wsgi):
        """Counts the requests in flight (the most at once in `max_in_flight`); `delay` each."""
        def counted(environ, start_response):
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay:
                    time.sleep(self.delay)
                return [b"".join(wsgi(environ, start_response))]
            finally:
                with self.lock:
                    self.in_flight -= 1
        return counted


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):  # hundreds of requests a test: `requests` tells them
        return None


@pytest.fixture(scope="session")
def graph_server_session():
    state = GraphServer()
    http = make_server("127.0.0.1", 0, state.create_app(), threaded=True, request_handler=_Quiet)
    state.url = f"http://127.0.0.1:{http.server_port}"
    thread = threading.Thread(target=http.serve_forever, name="graph-server", daemon=True)
    thread.start()
    yield state
    http.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def graph_server(graph_server_session):
    """The session's Graph server, emptied: no mailbox, no token, no failure queued."""
    graph_server_session.reset()
    yield graph_server_session
    graph_server_session.reset()

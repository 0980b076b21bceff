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
- `GET /users/{id}/mailFolders/{folder}/messages` (`$filter=internetMessageId eq '<id>'` the only
  filter, `$select`, `$top`, 10 by default, no next page);
- `GET /users/{id}/messages/{mid}/$value`: the raw MIME;
- `PATCH /users/{id}/messages/{mid}` with `{"isRead": true}`;
- `POST /users/{id}/messages/{mid}/move` with `{"destinationId": ...}` (a folder id or a well-known
  name: inbox, archive, sentitems, ...): 201 with the moved message under a new id, as Exchange does;
- `GET /users/{id}/mailFolders?$filter=displayName eq 'X'` and `GET /users/{id}/mailFolders/{folder}`;
- `POST /users/{id}/sendMail` with a base64 MIME body (`Content-Type: text/plain`): 202, and a copy
  in that user's (that shared mailbox's) Sent Items; every send is in `sent` as (user, bytes).

- `POST /subscriptions` (change notifications): `changeType`, `notificationUrl` and
  `lifecycleNotificationUrl` (https), `resource` (`users/{id}/mailFolders('{folder}')/messages`),
  `expirationDateTime` (in the future, at most MAX_MAIL_MINUTES ahead), `clientState` (at most
  128 characters). Before answering, it does Graph's validation handshake against each URL
  (`POST <url>?validationToken=<token>`, text/plain; it wants 200 and the token back as
  text/plain within 10 s, TLS checked against `notification_ca`) and refuses the subscription
  (400 `ValidationError`) when that fails. 201 with the subscription resource.
  `PATCH /subscriptions/{id}` with `expirationDateTime` (renewal), `POST /subscriptions/{id}/reauthorize`
  (204), `DELETE /subscriptions/{id}` (204); an unknown id answers 404 `ResourceNotFound`.
  While a subscription lives, `deliver()` into its folder POSTs a change notification
  (`{"value": [{"subscriptionId", "subscriptionExpirationDateTime", "changeType": "created",
  "resource", "resourceData", "clientState", "tenantId"}]}`) to its notificationUrl, and
  `lifecycle(id, event)` a lifecycle notification (`lifecycleEvent`: reauthorizationRequired,
  missed, subscriptionRemoved; a removed subscription is gone) to its lifecycleNotificationUrl;
  each such POST is in `notifications` as (url, body, status).

Every request needs `Authorization: Bearer <token>`: a token in `tokens`, or one the `oauth_server`
fixture issued when `introspection_url` names its introspection endpoint. Errors have Graph's shape
`{"error": {"code", "message", "innerError"}}`: 401 `InvalidAuthenticationToken`, 403
`ErrorAccessDenied` (`deny(user)`), 404 `ErrorInvalidUser` (a mailbox never added), 404
`ErrorItemNotFound`.

Test controls: `add_mailbox(user)`, `deliver(user, raw, folder="inbox")` (notifies subscribers),
`lifecycle(subscription_id, event)`, `notify(subscription_id, client_state=...)`, `subscriptions`,
`notification_ca`, `add_folder(user, name)`, `folder(user, name)` (the messages there),
`fail_next(status, retry_after=..., times=N, path=...)`
(throttling: 429 `TooManyRequests`, 503 `ServiceUnavailable`), `refuse(token)` (401 for it),
`delay` (seconds each request takes, to see concurrency), `endless_delta` ("same": every delta
page's next link is itself; "new": a fresh next link forever), `max_in_flight`, `requests` (method,
path, query), `reset()`. Fixtures: `graph_server_session` (one per run), `graph_server` (emptied).
"""

from __future__ import annotations

import base64
import contextlib
import email
import itertools
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["GraphServer", "graph_server", "graph_server_session", "running_graph_server"]

WELL_KNOWN = {"inbox": "Inbox", "archive": "Archive", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
              "drafts": "Drafts", "junkemail": "Junk Email"}
DEFAULT_PAGE = 10  # Exchange's own default for message delta pages
# Microsoft's documented maximum lifetime of a subscription to Outlook messages (7 days less a minute).
MAX_MAIL_MINUTES = 10080
TENANT = "5f1c3d8e-2b7a-4c1e-9f3a-0d6b8e2a4c71"


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
class Subscription:
    id: str
    user: str
    folder_id: str
    resource: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    needs_reauthorization: bool = False


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
            # "same": every delta page links to itself; "new": to a fresh page, forever (a server gone wrong)
            self.endless_delta: str | None = None
            self.subscriptions: dict[str, Subscription] = {}
            self.notifications: list[tuple[str, dict, int | None]] = []  # (url, body, status or None)
            self.handshakes: list[tuple[str, int | None]] = []  # (url, status or None)
            # The CA (or self-signed certificate) that the portal's https address is checked against.
            self.notification_ca: str | bool = True

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

    def deliver(self, user: str, raw: bytes, folder: str = "inbox", is_read: bool = False,
                received: datetime | None = None) -> str:
        """`received`: its receivedDateTime (default: the Date header, else now)."""
        with self.lock:
            self.add_mailbox(user)
            target = self._folder(user.lower(), folder)
            try:
                received = received or parsedate_to_datetime(email.message_from_bytes(raw)["Date"])
            except (TypeError, ValueError):
                received = datetime.now(timezone.utc)
            msg = Msg(graph_id(), raw, received.astimezone(timezone.utc), is_read, next(self.changes))
            target.messages[msg.id] = msg
            now = datetime.now(timezone.utc)
            subscribed = [sub for sub in self.subscriptions.values()
                          if sub.user == user.lower() and sub.folder_id == target.id and sub.expires > now]
        for sub in subscribed:  # outside the lock: the portal may call back
            self._post(sub.notification_url, {"value": [self._notification(sub, msg.id)]})
        return msg.id

    def _notification(self, sub: Subscription, mid: str, client_state: str | None = None) -> dict:
        resource = f"Users/{sub.user}/Messages/{mid}"
        return {"subscriptionId": sub.id, "subscriptionExpirationDateTime": _graph_time(sub.expires),
                "changeType": "created", "resource": resource,
                "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": resource,
                                 "@odata.etag": 'W/"CQAAABYAAAD"', "id": mid},
                "clientState": sub.client_state if client_state is None else client_state, "tenantId": TENANT}

    def notify(self, subscription_id: str, client_state: str | None = None, mid: str | None = None) -> int | None:
        """A change notification for the subscription (by default with its own clientState), as
        Graph sends it; the portal's status."""
        sub = self.subscriptions[subscription_id]
        return self._post(sub.notification_url, {"value": [self._notification(sub, mid or graph_id(), client_state)]})

    def lifecycle(self, subscription_id: str, event: str, client_state: str | None = None) -> int | None:
        """A lifecycle notification to the subscription's lifecycleNotificationUrl; the portal's status.
        subscriptionRemoved: Graph has removed it (renewing it answers 404); reauthorizationRequired:
        it sends nothing more until reauthorized or renewed."""
        with self.lock:
            sub = self.subscriptions[subscription_id]
            if event == "subscriptionRemoved":
                del self.subscriptions[subscription_id]
            elif event == "reauthorizationRequired":
                sub.needs_reauthorization = True
        body = {"value": [{"subscriptionId": sub.id, "subscriptionExpirationDateTime": _graph_time(sub.expires),
                           "tenantId": TENANT,
                           "clientState": sub.client_state if client_state is None else client_state,
                           "lifecycleEvent": event}]}
        return self._post(sub.lifecycle_url or sub.notification_url, body)

    def _post(self, url: str, body: dict) -> int | None:
        try:
            status = requests.post(url, json=body, timeout=10, verify=self.notification_ca).status_code
        except requests.RequestException:
            status = None
        with self.lock:
            self.notifications.append((url, body, status))
        return status

    def _handshake(self, url: str) -> bool:
        """Graph's validation of a notification URL: the token back, as text/plain, within 10 s."""
        token = ("Validation: Testing client application reachability for subscription Request-Id: "
                 + secrets.token_hex(8))
        try:
            answer = requests.post(url, params={"validationToken": token}, headers={"Content-Type": "text/plain"},
                                   timeout=10, verify=self.notification_ca)
        except requests.RequestException:
            with self.lock:
                self.handshakes.append((url, None))
            return False
        with self.lock:
            self.handshakes.append((url, answer.status_code))
        return (answer.status_code == 200 and answer.headers.get("Content-Type", "").startswith("text/plain")
                and answer.text == token)

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
        base = f"{self.api_url}/users/{user}/mailFolders/{folder_name}/messages/delta"
        with self.lock:
            if self.endless_delta:
                skip = "again" if self.endless_delta == "same" else secrets.token_urlsafe(8)
                return jsonify({"value": [], "@odata.nextLink": f"{base}?$skiptoken={skip}"})
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

        def messages(user, folder):
            with self.lock:
                refused = self._gate(user)
                if refused:
                    return refused
                try:
                    found = self._folder(user.lower(), folder)
                except KeyError:
                    return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                entries = [self._resource(m, found) for m in found.messages.values()]
                flt = request.args.get("$filter")
                if flt:
                    wanted = re.fullmatch(r"internetMessageId eq '((?:[^']|'')*)'", flt)
                    if wanted is None:
                        return error(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more "
                                     "invalid nodes.")
                    entries = [e for e in entries if e["internetMessageId"] == wanted.group(1).replace("''", "'")]
                if request.args.get("$select"):
                    kept = {"@odata.type", "@odata.etag", "id", *request.args["$select"].split(",")}
                    entries = [{k: v for k, v in e.items() if k in kept} for e in entries]
                return jsonify({"value": entries[:int(request.args.get("$top", 10))]})

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

        def create_subscription():
            refused = self._gate(None)
            if refused:
                return refused
            body = request.get_json(silent=True) or {}
            problem = self._subscription_problem(body)
            if isinstance(problem, Response):
                return problem
            user, folder_id = problem
            for url in filter(None, (body["notificationUrl"], body.get("lifecycleNotificationUrl"))):
                if not self._handshake(url):
                    return error(400, "ValidationError", "Subscription validation request failed. Notification "
                                 "endpoint must respond with 200 OK to validation request.")
            with self.lock:
                sub = Subscription(str(uuid.uuid4()), user, folder_id,
                                   body["resource"], body["notificationUrl"], body.get("lifecycleNotificationUrl"),
                                   body.get("clientState"), _parse_time(body["expirationDateTime"]))
                self.subscriptions[sub.id] = sub
                return jsonify(self._subscription_resource(sub)), 201

        def known_subscription(sid):
            """(the subscription, None) or (None, the answer Graph gives instead)."""
            refused = self._gate(None)
            if refused:
                return None, refused
            sub = self.subscriptions.get(sid)
            return (sub, None) if sub is not None else (None, error(404, "ResourceNotFound",
                                                                    "The object was not found."))

        def one_subscription(sid):
            with self.lock:
                sub, answer = known_subscription(sid)
                if sub is None:
                    return answer
                if request.method == "DELETE":
                    del self.subscriptions[sid]
                    return Response(status=204)
                if request.method == "PATCH":
                    when = (request.get_json(silent=True) or {}).get("expirationDateTime")
                    problem = self._expiry_problem(when)
                    if problem:
                        return problem
                    sub.expires = _parse_time(when)
                    sub.needs_reauthorization = False  # a renewal reauthorizes too
                return jsonify(self._subscription_resource(sub))

        def reauthorize(sid):
            with self.lock:
                sub, answer = known_subscription(sid)
                if sub is None:
                    return answer
                sub.needs_reauthorization = False
                return Response(status=204)

        app.add_url_rule("/v1.0/subscriptions", "create_subscription", create_subscription, methods=["POST"])
        app.add_url_rule("/v1.0/subscriptions/<sid>", "one_subscription", one_subscription,
                         methods=["GET", "PATCH", "DELETE"])
        app.add_url_rule("/v1.0/subscriptions/<sid>/reauthorize", "reauthorize", reauthorize, methods=["POST"])
        app.add_url_rule(f"{api}/mailFolders/<folder>/messages/delta", "delta", delta)
        app.add_url_rule(f"{api}/mailFolders/<folder>/messages", "messages", messages)
        app.add_url_rule(f"{api}/messages/<mid>/$value", "value", value)
        app.add_url_rule(f"{api}/messages/<mid>", "patch", patch, methods=["PATCH"])
        app.add_url_rule(f"{api}/messages/<mid>/move", "move", move, methods=["POST"])
        app.add_url_rule(f"{api}/mailFolders", "folders", folders)
        app.add_url_rule(f"{api}/mailFolders/<folder>", "one_folder", one_folder)
        app.add_url_rule(f"{api}/sendMail", "send_mail", send_mail, methods=["POST"])
        app.wsgi_app = self._counting(app.wsgi_app)
        return app

    def _subscription_problem(self, body: dict):
        """(user, folder id) of a valid subscription request, else Graph's 400."""
        def bad(message):
            return error(400, "InvalidRequest", message)
        if body.get("changeType") != "created":
            return bad("This test server only supports changeType 'created' on messages.")
        for name in ("notificationUrl", "lifecycleNotificationUrl"):
            url = body.get(name)
            if (url or name == "notificationUrl") and not str(url or "").startswith("https://"):
                return bad(f"Subscription {name} must be an https URL.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
            return bad("clientState must be a string of at most 128 characters.")
        problem = self._expiry_problem(body.get("expirationDateTime"))
        if problem:
            return problem
        match = re.fullmatch(r"/?users/([^/]+)/mailFolders\('([^']+)'\)/messages", body.get("resource") or "")
        if not match:
            return error(400, "ExtensionError", "Operation: Create; Exception: [Status Code: BadRequest; Reason: "
                         "The resource is not supported]")
        user = match.group(1).lower()
        with self.lock:
            if user not in self.mailboxes:
                return error(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
            try:
                folder = self._folder(user, match.group(2))
            except KeyError:
                return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return user, folder.id

    def _expiry_problem(self, value) -> Response | None:
        try:
            when = _parse_time(value)
        except (TypeError, ValueError):
            return error(400, "InvalidRequest", "expirationDateTime is required and must be a date and time.")
        now = datetime.now(timezone.utc)
        if when <= now:
            return error(400, "InvalidRequest", "Subscription expiration can only be in the future.")
        if (when - now).total_seconds() > MAX_MAIL_MINUTES * 60:
            return error(400, "InvalidRequest", f"Subscription expiration can only be {MAX_MAIL_MINUTES} minutes in "
                         "the future.")
        return None

    def _subscription_resource(self, sub: Subscription) -> dict:
        return {"@odata.context": f"{self.api_url}/$metadata#subscriptions/$entity", "id": sub.id,
                "resource": sub.resource, "applicationId": "app-1", "changeType": "created",
                "clientState": sub.client_state, "notificationUrl": sub.notification_url,
                "lifecycleNotificationUrl": sub.lifecycle_url, "expirationDateTime": _graph_time(sub.expires),
                "creatorId": "creator-1", "latestSupportedTlsVersion": "v1_2"}

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


def _graph_time(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _parse_time(value) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a time")
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Graph writes seven digits of fractions; Python reads six
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):  # hundreds of requests a test: `requests` tells them
        return None


@contextlib.contextmanager
def running_graph_server():
    """A Graph server on a free loopback port, in a thread, stopped afterwards."""
    state = GraphServer()
    http = make_server("127.0.0.1", 0, state.create_app(), threaded=True, request_handler=_Quiet)
    state.url = f"http://127.0.0.1:{http.server_port}"
    thread = threading.Thread(target=http.serve_forever, name="graph-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        http.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def graph_server_session():
    with running_graph_server() as state:
        yield state


@pytest.fixture
def graph_server(graph_server_session):
    """The session's Graph server, emptied: no mailbox, no token, no failure queued."""
    graph_server_session.reset()
    yield graph_server_session
    graph_server_session.reset()

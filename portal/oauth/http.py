"""Form posts to an authorisation server and its JSON answer, with a timeout (standard library only).

Plain http is refused except on loopback: a client secret or a refresh token must not cross a
network in clear text.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote_plus, urlencode, urlsplit
from urllib.request import Request, urlopen

from portal.oauth.errors import OAuthError, translate, who

log = logging.getLogger(__name__)

TIMEOUT = 20  # seconds; an unreachable sign-in service must not hold a fetch job for minutes
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_url(url: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    raise OAuthError(f"{url!r} is not an https URL (plain http is allowed on loopback only)", kind="config")


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: both halves form-encoded, then Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def post_form(url: str, form: dict, *, provider: str, tenant: str | None = None, headers: dict | None = None,
              secrets=(), timeout: float = TIMEOUT, empty_ok: bool = False) -> dict:
    """POST `form`; the JSON object answered. Raises OAuthError in plain words, never with a secret."""
    check_url(url)
    host = urlsplit(url).hostname
    request = Request(url, data=urlencode({k: v for k, v in form.items() if v is not None}).encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                               **(headers or {})}, method="POST")
    try:
        with urlopen(request, timeout=timeout) as answer:  # noqa: S310 - the scheme is checked above
            status, raw = answer.status, answer.read()
    except HTTPError as refused:
        status, raw = refused.code, refused.read()
    except (URLError, socket.timeout, TimeoutError, ConnectionError, HTTPException, OSError) as failure:
        reason = getattr(failure, "reason", failure)
        log.info("OAuth: %s could not be reached: %s", host, type(reason).__name__)
        raise OAuthError(f"could not reach {who(provider)}'s sign-in service at {host}: {reason}",
                         kind="network") from None
    body = _json(raw)
    if status < 400:
        if body is not None:
            return body
        if empty_ok:
            return {}
    if body is None:
        raise OAuthError(f"{who(provider)}'s sign-in service at {host} answered HTTP {status} without an OAuth answer",
                         code=f"HTTP {status}", kind="refused" if 400 <= status < 500 else "server", status=status)
    error = translate(provider, status, body, tenant=tenant, secrets=secrets)
    log.info("OAuth: %s refused a request: %s", host, error.code)
    raise error


def _json(raw: bytes) -> dict | None:
    try:
        found = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None

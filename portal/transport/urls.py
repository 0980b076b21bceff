"""The rules for an HTTPS API an admin types the URL of (OAuth2 endpoints, Microsoft Graph), and
the reading of its answers: https only, plain http to this machine only (the tests' local servers),
the certificates the system trusts, answers read up to a size, JSON objects, and network failures
in plain words. Plain Python; portal.oauth, transport.graph and the mailbox settings share them."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
from urllib.parse import urlsplit

import requests

MAX_ANSWER = 4 * 1024 * 1024  # bytes of an API's answer read at most (a message's MIME has its own limit)


def is_loopback(host: str | None) -> bool:
    """This machine: the only place plain http may go (the tests' local servers)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def url_refusal(url) -> str | None:
    """Why a secret or a token may not travel to this URL, or None: https, or http on loopback only."""
    text = str(url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{text!r} is not a URL like https://login.example.net/oauth2/token."
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"{text!r} must use https: tokens and secrets travel through it (plain http to this machine only)."
    return None


def trusted_cas():
    # The system's trust store (or SSL_CERT_FILE), as the standard library used before: a generic
    # server may have a certificate from a private CA the system trusts but certifi does not.
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or True


def read_limited(response: requests.Response, limit: int) -> bytes | None:
    """The body of a streamed answer (stream=True), or None when it is larger than `limit` bytes:
    then no more of it is read. Raises requests.RequestException when the network fails."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def size_words(size: int) -> str:
    """A limit as people read it: 4 MiB, or 2000 bytes."""
    return f"{size / (1024 * 1024):g} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def json_object(raw: bytes) -> dict | None:
    """The JSON object a body holds, or None (empty, not JSON, not an object)."""
    try:
        found = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def network_words(failure: requests.RequestException, timeout: float) -> str:
    """What went wrong on the network, without requests' and urllib3's wrapping."""
    if isinstance(failure, requests.Timeout):
        return f"no answer within {timeout:g} seconds"
    if isinstance(failure, requests.exceptions.SSLError):
        return "the TLS connection failed (certificate not trusted or protocol refused)"
    cause, deepest = failure, None
    while cause is not None:  # the innermost operating-system error says it best
        if isinstance(cause, OSError) and cause.strerror:
            deepest = cause
        cause = cause.__cause__ or cause.__context__
    if isinstance(deepest, socket.gaierror):
        return f"its host name does not resolve ({deepest.strerror})"
    if deepest is not None:
        return deepest.strerror
    return type(failure).__name__

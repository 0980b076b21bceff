"""Messages for the transport tests (varied bytes that a careless transport would change), and access tokens."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qs, urlsplit

import requests


def make_message(n: int, body_bytes: int = 0, *, extra: bytes = b"") -> bytes:
    """A CRLF message (IMAP returns CRLF, so the delivered bytes come back exactly)."""
    head = (
        b"From: Sender %d <sender%d@customer.example>\r\n"
        b"To: support@msp.example\r\n"
        b"Subject: =?utf-8?q?Drucker_kaputt_=E2=84=96?= %d\r\n"
        b"Message-ID: <m%d@customer.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" % (n, n, n, n)
    )
    # 8-bit text, a line that is only a dot (POP3 dot-stuffing), a line starting with a dot.
    body = b"Gr\xfc\xdfe aus K\xf6ln, Nachricht %d\r\n.\r\n..hidden dots\r\n" % n + extra
    if body_bytes:
        line = (b"x" * 76 + b"\r\n")
        body += line * (body_bytes // len(line) + 1)
    return head + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- access tokens from the test authorisation server (tests/oauth_server.py) --------------------

REDIRECT = "http://127.0.0.1/callback"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def delegated_token(oauth_server, username: str, client_id: str = "tidemark", secret: str = "s3cret-client") -> str:
    """An access token for `username`, issued as the Connect button will get it: the code flow with
    PKCE, consent given on the server's page."""
    if client_id not in oauth_server.clients:
        oauth_server.register_client(client_id, secret, redirect_uris=[REDIRECT])
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page = requests.get(f"{oauth_server.url}/authorize", timeout=5, params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "mail",
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": username})
    form = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    form.update(username=username, consent="accept")
    answer = requests.post(f"{oauth_server.url}/authorize", data=form, allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    issued = requests.post(f"{oauth_server.url}/token", auth=(client_id, secret), timeout=5, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    issued.raise_for_status()
    return issued.json()["access_token"]


def app_token(oauth_server, app_username: str, client_id: str = "tidemark-app", secret: str = "s3cret-app") -> str:
    """An app-only access token (client credentials); introspection names it `app_username`."""
    oauth_server.register_client(client_id, secret, grant_types=["client_credentials"], app_username=app_username)
    issued = requests.post(f"{oauth_server.url}/token", auth=(client_id, secret), timeout=5,
                           data={"grant_type": "client_credentials", "scope": ""})
    issued.raise_for_status()
    return issued.json()["access_token"]

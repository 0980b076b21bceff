"""Logging in with an OAuth2 access token: the SASL mechanisms XOAUTH2 and OAUTHBEARER.

XOAUTH2 (Google's and Microsoft's) sends "user=<mailbox>^Aauth=Bearer <token>^A^A"; OAUTHBEARER
(RFC 7628) is the standard form of the same. The user is the mailbox to open: for a shared
mailbox in Exchange Online that is the shared mailbox's address while the token belongs to the
connected user or the app. When the server refuses, it first sends a challenge holding a JSON
error ({"status": "401", "schemes": "bearer", ...}); the client answers with an empty line and
the server then fails the command. Nothing here logs or returns the token.
"""

from __future__ import annotations

import base64
import binascii
import json

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"
# Words for a person when the server refuses the token itself.
REFUSED_TOKEN = "it may have expired or been revoked; reconnect the mailbox"
# Exchange Online accepts the token, then refuses every command: the mailbox is not licensed for
# IMAP/POP, the protocol is disabled for it, or the app has no permission on it.
NOT_CONNECTED = "User is authenticated but not connected"
# Exchange Online's SMTP answer when SMTP AUTH is off for the mailbox or the tenant.
SMTP_AUTH_DISABLED = ("5.7.139", "SmtpClientAuthentication is disabled")


def choose_mechanism(offered: set[str] | frozenset[str] | list[str]) -> str | None:
    """XOAUTH2 when offered (the one Microsoft and Google both speak), else OAUTHBEARER, else None."""
    names = {name.upper() for name in offered}
    if XOAUTH2 in names:
        return XOAUTH2
    if OAUTHBEARER in names:
        return OAUTHBEARER
    return None


def initial_response(mechanism: str, user: str, token: str) -> bytes:
    """The client's first (and only) message for the mechanism, not yet base64-encoded."""
    if mechanism == XOAUTH2:
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode("utf-8")
    if mechanism == OAUTHBEARER:
        # RFC 5801 gs2 header: the authorization identity with ',' and '=' escaped.
        identity = user.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={identity},\x01auth=Bearer {token}\x01\x01".encode("utf-8")
    raise ValueError(f"unknown token mechanism {mechanism!r}")


def encoded_response(mechanism: str, user: str, token: str) -> str:
    return base64.b64encode(initial_response(mechanism, user, token)).decode("ascii")


def challenge_words(challenge: bytes | str | None) -> str:
    """The server's error challenge in short words: 'status 401, schemes bearer' or ''."""
    if not challenge:
        return ""
    raw = challenge.encode("ascii", "replace") if isinstance(challenge, str) else challenge
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = raw  # some libraries hand over the challenge already decoded
    try:
        data = json.loads(decoded.decode("utf-8", "replace"))
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [f"{key} {data[key]}" for key in ("status", "error", "schemes", "scope") if data.get(key)]
    return ", ".join(str(p) for p in parts)


def refused_token(login_name: str, said: str) -> str:
    """The plain words for a token the server would not take, with what the server said."""
    said = f" (the server said {said})" if said else ""
    return f"the server refused the access token for {login_name}: {REFUSED_TOKEN}{said}"


def not_connected(address: str, login_name: str) -> str:
    return (f"{address} accepted the access token for {login_name} but will not open the mailbox: "
            "IMAP or POP is disabled for this mailbox, it has no licence for it, or the app lacks "
            "permission on it (the server said \"User is authenticated but not connected\")")


def smtp_auth_disabled(address: str, login_name: str, said: str) -> str | None:
    """Plain words for Microsoft's 5.7.139, or None when the server said something else."""
    if not any(mark.lower() in said.lower() for mark in SMTP_AUTH_DISABLED):
        return None
    return (f"{address} does not let {login_name} send with a login: SMTP AUTH is disabled for this "
            "mailbox or for the whole tenant (Microsoft 5.7.139); an Exchange admin enables it with "
            f"Set-CASMailbox -Identity {login_name} -SmtpClientAuthenticationDisabled $false "
            f"(the server said {said})")


def missing_mechanism(address: str, protocol: str) -> str:
    return (f"{address} does not offer login with an access token (AUTH=XOAUTH2 or OAUTHBEARER) "
            f"for {protocol.upper()}; use a password, or check the server name and security setting")

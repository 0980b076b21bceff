"""The rules for an HTTPS API an admin types the URL of (OAuth2 endpoints, Microsoft Graph):
https only, plain http to this machine only (the tests' local servers), and the certificates
the system trusts. Plain Python; portal.oauth and transport.graph share them."""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import urlsplit


def is_loopback(host: str | None) -> bool:
    """This machine: the only place plain http may go (the tests' local servers)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def url_refusal(url: str) -> str | None:
    """Why a secret may not travel to this URL, or None: https, or http on loopback only."""
    parts = urlsplit(url or "")
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return None
    return f"{url!r} is not an https URL (plain http is allowed on loopback only)"


def trusted_cas():
    # The system's trust store (or SSL_CERT_FILE), as the standard library used before: a generic
    # server may have a certificate from a private CA the system trusts but certifi does not.
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or True

"""An app registration's certificate credential as stored on a row (the MSP's Microsoft 365 app,
or a mailbox's own app): the admin's PEM checked (portal.oauth.certificate), kept encrypted with
portal.crypto, its thumbprint and notAfter beside it. Flush, never commit."""

from __future__ import annotations

from typing import Any

from portal import crypto
from portal.oauth.certificate import Certificate, CertificateProblem, read_certificate


def checked(value: Any, errors: dict, key: str) -> tuple[str, Certificate | None]:
    """The pasted or uploaded PEM, checked; ("", None) when none was given. Never echoes the PEM."""
    pem = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    if not pem.strip():
        return "", None
    try:
        return pem.strip() + "\n", read_certificate(pem)
    except CertificateProblem as problem:
        errors.setdefault(key, []).append(f"This certificate cannot sign the app in: {problem}.")
        return "", None


def store(row, keys: str, pem: str, cert: Certificate) -> None:
    row.certificate_encrypted = crypto.encrypt(keys, pem)
    row.certificate_thumbprint, row.certificate_expires = cert.thumbprint, cert.not_after


def pem_of(row, keys: str) -> str:
    return crypto.decrypt(keys, row.certificate_encrypted) if row.certificate_encrypted else ""

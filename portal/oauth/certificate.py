"""A certificate credential for an app registration: the admin's PEM (private key and its
certificate) checked, and the RFC 7523 client assertion signed with it for a token request.

Microsoft identifies the certificate by the `x5t` header: base64url of its SHA-1 thumbprint, the
same thumbprint Entra ID shows under Certificates & secrets. Plain Python, no storage: callers keep
the PEM encrypted (portal.crypto).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

MIN_KEY_BITS = 2048
ASSERTION_LIFETIME = 600  # seconds; Microsoft accepts up to an hour, a short one limits a replay


class CertificateProblem(ValueError):
    """Why a PEM cannot sign the app in, in plain words."""


@dataclass(frozen=True)
class Certificate:
    thumbprint: str  # SHA-1, upper-case hex, as Entra ID shows it
    not_after: datetime  # UTC; the credential's expiry
    subject: str


def read_certificate(pem: str, now: datetime | None = None) -> Certificate:
    """The certificate of a PEM holding an unencrypted RSA private key (2048 bits or more) and the
    certificate of that key, still valid. Raises CertificateProblem."""
    cert, key = _parts(pem)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateProblem("the private key is not an RSA key: Microsoft signs in apps with RSA keys only")
    if key.key_size < MIN_KEY_BITS:
        raise CertificateProblem(f"the RSA key has {key.key_size} bits: use one of at least {MIN_KEY_BITS}")
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise CertificateProblem("the private key does not belong to the certificate: paste the key the "
                                 "certificate was made from")
    not_after = cert.not_valid_after_utc
    if not_after <= (now or datetime.now(UTC)):
        raise CertificateProblem(f"the certificate expired on {not_after:%Y-%m-%d}: make a new one and upload "
                                 "it to the app registration too")
    return Certificate(cert.fingerprint(hashes.SHA1()).hex().upper(), not_after,  # noqa: S303 - Entra's thumbprint
                       cert.subject.rfc4514_string())


def _parts(pem: str):
    data = (pem or "").strip().encode()
    if b"-----BEGIN" not in data:
        raise CertificateProblem("this is not a PEM file: paste the text from -----BEGIN PRIVATE KEY----- to "
                                 "the certificate's -----END CERTIFICATE-----")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateProblem("the PEM holds no certificate: add the certificate after the private key") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateProblem("the private key is protected by a password: export it without one "
                                 "(openssl pkey -in key.pem -out plain.pem)") from None
    except ValueError:
        raise CertificateProblem("the PEM holds no private key: add it before the certificate") from None
    # A chain may follow; the key's own certificate is the one that signs in.
    numbers = key.public_key().public_numbers() if isinstance(key, rsa.RSAPrivateKey) else None
    own = next((c for c in certs if numbers is not None and c.public_key().public_numbers() == numbers), certs[0])
    return own, key


def _x5t(thumbprint_hex: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(thumbprint_hex)).rstrip(b"=").decode()


def client_assertion(pem: str, client_id: str, token_url: str, now: float | None = None) -> str:
    """RFC 7523 client assertion: RS256, x5t header; iss = sub = client id, aud = token URL, a
    random jti (Authlib draws it), nbf/iat now, exp ten minutes on."""
    cert, key = _parts(pem)
    issued = int(now if now is not None else time.time())
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - Microsoft's x5t is SHA-1
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private_key_jwt_sign(RSAKey.import_key(pem_key), client_id, token_url, alg="RS256", header={"x5t": _x5t(thumbprint)},
                                claims={"nbf": issued}, issued_at=issued, expires_at=issued + ASSERTION_LIFETIME)


class CertificateAuth(PrivateKeyJWT):
    """Authlib's private_key_jwt client authentication, signing with the app's certificate PEM."""

    def __init__(self, pem: str):
        super().__init__()
        self.pem = pem

    def sign(self, auth, token_endpoint):
        return client_assertion(self.pem, auth.client_id, token_endpoint)

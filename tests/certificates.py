"""Self-signed RSA certificates with their private keys, as an admin makes one for an app
registration (openssl req -x509 -newkey rsa:2048 ...), for the certificate-credential tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@lru_cache(maxsize=8)
def rsa_key(bits: int = 2048, which: int = 0) -> rsa.RSAPrivateKey:
    """A key per (bits, which): key generation is slow, tests share them."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def certificate(key, *, not_after: datetime | None = None, not_before: datetime | None = None):
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tidemark test app")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=365))
            .sign(key, hashes.SHA256()))


def cert_pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def credential(key=None, cert=None, **dates) -> tuple[str, str, x509.Certificate]:
    """(the PEM an admin pastes: key then certificate, the certificate's PEM alone, the certificate)."""
    key = key or rsa_key()
    cert = cert or certificate(key, **dates)
    return key_pem(key) + cert_pem(cert), cert_pem(cert), cert


def loopback_server_files(directory) -> tuple[str, str]:
    """(certificate file, key file) of a self-signed TLS server certificate for 127.0.0.1 (its
    own trust anchor): a live portal on https, which the local Graph server checks against it."""
    import ipaddress
    from pathlib import Path

    key = rsa_key(2048, 1)
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = Path(directory) / "portal.crt", Path(directory) / "portal.key"
    cert_file.write_text(cert_pem(cert))
    key_file.write_text(key_pem(key))
    return str(cert_file), str(key_file)

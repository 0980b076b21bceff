"""Secrets at rest (mailbox passwords, later OAuth tokens), encrypted with Fernet.

TIDEMARK_ENCRYPTION_KEY holds one key, or several separated by commas: the first encrypts,
all decrypt. To rotate: put a new key first, keep the old one after it, run
`flask secrets rotate`, then drop the old key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretError(RuntimeError):
    pass


def _fernet(keys: str) -> MultiFernet:
    parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
    if not parts:
        raise SecretError("TIDEMARK_ENCRYPTION_KEY is not set")
    try:
        return MultiFernet([Fernet(k) for k in parts])
    except ValueError:
        raise SecretError("TIDEMARK_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64 bytes)") from None


def encrypt(keys: str, plain: str) -> bytes:
    return _fernet(keys).encrypt(plain.encode())


def decrypt(keys: str, token: bytes) -> str:
    try:
        return _fernet(keys).decrypt(bytes(token)).decode()
    except InvalidToken:
        raise SecretError("a stored secret cannot be decrypted with the configured keys") from None


def rotate(keys: str, token: bytes) -> bytes:
    """The same secret, encrypted with the first key."""
    try:
        return _fernet(keys).rotate(bytes(token))
    except InvalidToken:
        raise SecretError("a stored secret cannot be decrypted with the configured keys") from None

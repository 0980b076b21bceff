"""Column types and helpers shared by every model."""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import DateTime, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no offset)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class CertificateCredential:
    """An app registration's certificate instead of its secret (services.app_certificate): the PEM
    with its private key, encrypted; its SHA-1 thumbprint as Entra ID shows it, and its notAfter."""

    certificate_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)  # portal.crypto
    certificate_thumbprint: Mapped[str | None] = mapped_column(String(40))
    certificate_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def credential(self) -> str:
        """What the app signs in with: the certificate wins over a secret."""
        return "certificate" if self.certificate_encrypted else "client secret"

    @property
    def credential_expires(self) -> date | None:
        """The certificate's notAfter, else the secret's typed-in date: what the alerts count down to."""
        if self.certificate_encrypted and self.certificate_expires:
            return self.certificate_expires.date()
        return self.secret_expires

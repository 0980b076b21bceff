"""An MSP's Microsoft 365 app (one multi-tenant app registration), and the customer tenants that
consented to it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import CertificateCredential, UTCDateTime, utcnow


class MspMicrosoftApp(CertificateCredential, db.Model):
    """Entered once per MSP by its admins. A row of its own rather than columns of `clients`: only
    MSP roots have one, and most have none."""

    __tablename__ = "msp_microsoft_apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), unique=True)
    client_id: Mapped[str] = mapped_column(String(255))  # the app registration's application id
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)  # portal.crypto
    secret_expires: Mapped[date | None] = mapped_column(Date)  # typed in by the admin, for the alerts
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    SECRET_COLUMNS = ("client_secret_encrypted", "certificate_encrypted")


class TenantConsent(db.Model):
    """A customer's global admin granted the MSP's app in their tenant (Microsoft's admin consent),
    for this client. `app_id` is the app that was consented: another app needs a new consent."""

    __tablename__ = "tenant_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    msp_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), unique=True)
    tenant: Mapped[str] = mapped_column(String(255))  # the tenant id (a GUID) Microsoft sent back
    app_id: Mapped[str] = mapped_column(String(255))
    consented_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

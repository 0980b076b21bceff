"""Typed SQLAlchemy models by area, shared by the portal and the workers."""

from portal.models.audit import AuditEntry
from portal.models.clients import INHERITED_SETTINGS, AllowEntry, Client
from portal.models.users import ROLES, SignInFailure, User

__all__ = ["AllowEntry", "AuditEntry", "Client", "INHERITED_SETTINGS", "ROLES", "SignInFailure", "User"]

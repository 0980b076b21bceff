"""Typed SQLAlchemy models by area, shared by the portal and the workers."""

from portal.models.audit import AuditEntry
from portal.models.clients import INHERITED_SETTINGS, AllowEntry, Client
from portal.models.mailboxes import FolderState, Mailbox, MailboxAlert, MailboxOAuth, Route
from portal.models.microsoft import MspMicrosoftApp, TenantConsent
from portal.models.outbound import AutoMailLog, CannedResponse, EmailTemplate, Setting, SmtpServer
from portal.models.tickets import Attachment, Contact, Message, RawMessage, Ticket, TicketLink
from portal.models.users import ROLES, SignInFailure, User

__all__ = [
    "AutoMailLog", "CannedResponse", "EmailTemplate", "Setting", "SmtpServer",
    "AllowEntry", "Attachment", "AuditEntry", "Client", "Contact", "FolderState", "INHERITED_SETTINGS",
    "Mailbox", "MailboxAlert", "MailboxOAuth", "Message", "MspMicrosoftApp", "ROLES", "RawMessage", "Route", "SignInFailure", "Ticket",
    "TenantConsent", "TicketLink", "User",
]

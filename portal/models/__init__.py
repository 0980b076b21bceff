"""Typed SQLAlchemy models by area, shared by the portal and the workers."""

from portal.models.audit import AuditEntry
from portal.models.clients import INHERITED_SETTINGS, AllowEntry, Client
from portal.models.fields import CustomField, TicketFieldValue
from portal.models.mailboxes import FolderState, GraphSubscription, Mailbox, MailboxAlert, MailboxOAuth, Route
from portal.models.microsoft import MspMicrosoftApp, TenantConsent
from portal.models.outbound import (AutoMailLog, CannedResponse, EmailLayout, EmailTemplate, MspSetting, Setting,
                                    SmtpServer)
from portal.models.sla import SlaPolicy
from portal.models.tickets import Attachment, Contact, Message, RawMessage, Ticket, TicketLink
from portal.models.users import ROLES, SignInFailure, User

__all__ = [
    "AutoMailLog", "CannedResponse", "EmailLayout", "EmailTemplate", "MspSetting", "Setting", "SmtpServer",
    "AllowEntry", "Attachment", "AuditEntry", "Client", "Contact", "CustomField", "TicketFieldValue", "FolderState", "GraphSubscription", "INHERITED_SETTINGS",
    "Mailbox", "MailboxAlert", "MailboxOAuth", "Message", "MspMicrosoftApp", "ROLES", "RawMessage", "Route", "SignInFailure", "SlaPolicy", "Ticket",
    "TenantConsent", "TicketLink", "User",
]

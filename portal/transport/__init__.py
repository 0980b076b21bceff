"""Mail transport: IMAP, POP3 and Microsoft Graph sessions, the connection test. Plain Python (no Flask, SQLAlchemy or RQ)."""

from portal.transport.base import ServerSettings, TransportError
from portal.transport.graph import GraphSession, GraphSettings
from portal.transport.imap import FetchedMessage, FolderState, ImapSession
from portal.transport.pop3 import Pop3Session
from portal.transport.probe import ProbeResult, test_connection

__all__ = [
    "FetchedMessage",
    "FolderState",
    "GraphSession",
    "GraphSettings",
    "ImapSession",
    "Pop3Session",
    "ProbeResult",
    "ServerSettings",
    "TransportError",
    "open_session",
    "test_connection",
]


def open_session(settings: ServerSettings | GraphSettings) -> ImapSession | Pop3Session | GraphSession:
    """Connect and log in; returns a context manager. Raises TransportError."""
    if settings.protocol == "graph":
        return GraphSession(settings)
    if settings.protocol == "imap":
        return ImapSession(settings)
    return Pop3Session(settings)

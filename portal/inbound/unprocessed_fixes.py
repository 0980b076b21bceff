"""The fixes the unprocessed page offers beside placing one email: for mail that only reached the
mailbox by BCC, the wildcard route that catches that sender's mail from now on (allow-lists cannot:
they are only asked about mail that names the mailbox); and, for a sender no client knows, a new
client with the sender's domain on its allow-list. Each fix is followed by deciding the email
again. Flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass


from portal.inbound.replay import Outcome, Pipeline
from portal.inbound.context import AllowLists
from portal.inbound.unprocessed import UNPROCESSED, allow_listed, rerun, sender_entry
from portal.mail.route import BCC_CAUSE
from portal.models import Client, Mailbox, Message, Route, User
from portal.services import ValidationError
from portal.services.allowlist import is_freemail
from portal.services.clients import ClientInput, create_client, tree_clients
from portal.services.routes import add_bcc_route
from portal.extensions import db

# Second-level labels under which the organisation's name is one label further left.
_SHARED_SECOND_LEVEL = {"co", "com", "org", "net", "ac", "gov", "edu", "ltd", "plc"}


@dataclass
class BccCause:
    """Why a BCC'd email waits, in a sentence, and what the fix would create."""

    text: str
    has_routes: bool
    claimed_by: int | None  # the client whose allow-list names the sender, if one does


def bcc_cause(message: Message) -> BccCause | None:
    """The real cause when the pipeline left the email waiting because it was only BCC'd."""
    last = (message.trace or [""])[-1]
    mailbox = message.raw_message.mailbox if message.raw_message else None
    if message.outcome != UNPROCESSED or BCC_CAUSE not in last or mailbox is None:
        return None
    shown = ", ".join(p["address"] for p in (*(message.to or []), *(message.cc or []))) or "no one"
    text = (f"This email was sent to {mailbox.address} by BCC: its To/Cc name {shown}, not the mailbox, so no "
            "route matches them, and the mailbox has no wildcard route for this sender. Allow-lists cannot place "
            "BCC'd mail: teaching one changes nothing for the next such email. A wildcard route can.")
    return BccCause(text, bool(mailbox.routes), _claimed_by(message, mailbox))


def _claimed_by(message: Message, mailbox: Mailbox) -> int | None:
    """The client whose allow-list (in the mailbox's tree) names the sender, as routing reads it."""
    try:
        sender = sender_entry(message, "address")
    except ValidationError:
        return None  # no sender, or one no allow-list could hold
    found = allow_listed(AllowLists(mailbox, tree_clients(message.msp_id)), sender)
    return found[0] if found else None


def fix_bcc(message: Message, client: Client | None, scope: str, actor: User | None,
            pipeline: Pipeline) -> tuple[Route, bool, Outcome]:
    """Add the wildcard route for the sender's address or domain to the email's mailbox, then
    decide the email again. (route, whether it was added, what became of the email)."""
    if message.outcome != UNPROCESSED:
        raise ValidationError({"": ["This email is no longer waiting; it was placed or discarded meanwhile."]})
    if client is None or client.msp_id != message.msp_id or client.disabled:
        raise ValidationError({"client_id": ["Choose one of your clients."]})
    mailbox = message.raw_message.mailbox if message.raw_message else None
    if mailbox is None:
        raise ValidationError({"": ["The mailbox this email arrived in no longer exists; it can only be discarded."]})
    route, added = add_bcc_route(mailbox, client, sender_entry(message, scope), actor=actor)
    return route, added, rerun(message, actor, pipeline)


def client_name_for(message: Message) -> str:
    """A name for a new client, from the sender's domain: it@mail.newco.co.uk → Newco."""
    domain = (message.from_address or "").rpartition("@")[2].lower()
    labels = [label for label in domain.split(".") if label]
    if len(labels) < 2:
        return domain
    name = labels[-2]
    if name in _SHARED_SECOND_LEVEL and len(labels) >= 3:
        name = labels[-3]
    return name[:1].upper() + name[1:]


def create_client_for(message: Message, name: str, actor: User | None, pipeline: Pipeline) -> tuple[Client, Outcome]:
    """A new client under the MSP with the sender's domain on its allow-list (the sender's
    address when the domain is a public mail service's, gmail.com: anyone can write from it),
    then the email decided again."""
    if message.outcome != UNPROCESSED:
        raise ValidationError({"": ["This email is no longer waiting; it was placed or discarded meanwhile."]})
    entry = sender_entry(message, "domain")
    if is_freemail(entry):
        entry = sender_entry(message, "address")
    msp = db.session.get(Client, message.msp_id)
    client = create_client(msp, ClientInput(name=(name or "").strip(), allow=[entry]), actor)
    return client, rerun(message, actor, pipeline)

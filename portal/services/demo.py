"""The demo MSP that `make run` seeds, so a newcomer has something to sign in to: two clients,
an admin, and a mailbox whose sample emails (portal/demo_mail/) go through the real pipeline.

The demo mailbox is a draft with no server: nothing fetches it, and it sends no
acknowledgements (its acknowledgement switch is off), so no mail ever leaves for the samples'
example addresses, whatever outgoing server the installation has. Flush, never commit: the
caller passes `commit`, called after each sample as a fetch commits each message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portal.inbound.context import IngestContext
from portal.inbound.decide import IngestResult
from portal.inbound.fetch import ingest_given, known_server_ids
from portal.models import Client, Mailbox, User
from portal.services import clients, users
from portal.services.mailboxes import get_mailbox_by_address, save_mailbox
from portal.services.routes import RouteInput

DEMO_MSP = "Demo MSP"
DEMO_ADMIN = "admin@demo.example"
DEMO_PASSWORD = "tidemark-demo"
DEMO_CLIENTS = [
    ("Contoso", "CONTOSO", ["contoso.example.com"], "Best regards"),
    ("Fabrikam", "FABRIKAM", ["fabrikam.example.net"], None),
]
DEMO_MAILBOX = "support@demo.example"
# An alias the mailbox collects that no route names: mail sent to it waits among the unprocessed.
DEMO_ALIAS = "hello@demo.example"
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "demo_mail"
# Where the samples' raw rows say they came from (a fetch names the server folder).
SAMPLE_FOLDER = "demo"


def seed_demo() -> tuple[Client, User, bool]:
    """Create the demo MSP, its two sub-clients and its admin unless they exist.
    Returns (msp, admin, created_anything)."""
    created = False
    msp = clients.get_msp_by_name(DEMO_MSP)
    if msp is None:
        msp = clients.create_msp(
            clients.ClientInput(name=DEMO_MSP, code="DEMO", reference_prefix="T",
                                waterline="## Please reply above this line ##")
        )
        created = True
    for name, code, allow, waterline in DEMO_CLIENTS:
        if clients.get_client_by_name(msp.id, name) is None:
            clients.create_client(
                msp, clients.ClientInput(name=name, code=code, allow=allow, waterline=waterline or ""), None
            )
            created = True
    admin = users.get_user_by_email(DEMO_ADMIN)
    if admin is None:
        admin = users.create_user(msp, DEMO_ADMIN, DEMO_PASSWORD, "admin", None, name="Demo Admin")
        created = True
    return msp, admin, created


def demo_mailbox(msp: Client, *, keys: str) -> tuple[Mailbox, bool]:
    """The demo's mailbox, created unless it exists: a draft without a server, acknowledgements
    off, the alias hello@ that no route names, and one route per client plus the fallback."""
    mailbox = get_mailbox_by_address(DEMO_MAILBOX, msp.id)
    if mailbox is not None:
        return mailbox, False
    contoso = clients.get_client_by_name(msp.id, "Contoso")
    fabrikam = clients.get_client_by_name(msp.id, "Fabrikam")
    routes = [
        RouteInput(name="Contoso", client=contoso, recipients=[DEMO_MAILBOX], senders=list(DEMO_CLIENTS[0][2])),
        RouteInput(name="Fabrikam", client=fabrikam, recipients=[DEMO_MAILBOX], senders=list(DEMO_CLIENTS[1][2])),
        RouteInput(name="Everything else", client=msp, fallback=True),
    ]
    values = {"address": DEMO_MAILBOX, "name": "Demo support (sample emails)", "status": "draft",
              "aliases": [DEMO_ALIAS], "acknowledge": False}
    mailbox, _ = save_mailbox(msp, msp, values, keys=keys, actor=None, routes=routes)
    return mailbox, True


@dataclass
class SampleResult:
    name: str  # the sample's file name
    outcome: str  # the pipeline's: created, appended, duplicate, unprocessed… ("failed" when deciding failed)
    reference: str | None  # the ticket it went onto
    error: str | None = None


def sample_files() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.eml"))


def seed_samples(mailbox: Mailbox, *, secret: bytes, host: str | None,
                 commit: Callable[[], None]) -> list[SampleResult]:
    """Run every sample email through the pipeline into the demo mailbox, in file-name order, as
    `flask mail ingest` does. A sample already stored (its file name is its server id, as a
    fetch knows a message by its uid) is not handed over again: `make run` seeds on every start."""
    ctx = IngestContext(mailbox, secret, host)
    files = sample_files()
    known = known_server_ids(mailbox, SAMPLE_FOLDER, 0, among=[p.name for p in files])
    results = []
    for path in files:
        if path.name in known:
            results.append(SampleResult(path.name, "already seeded", None))
            continue
        stored, result = ingest_given(ctx, path.read_bytes(), server_id=path.name, folder=SAMPLE_FOLDER)
        commit()
        results.append(_sample_result(path.name, result, stored.last_error))
    return results


def _sample_result(name: str, result: IngestResult | None, error: str | None) -> SampleResult:
    if result is None:
        return SampleResult(name, "failed", None, error)
    return SampleResult(name, result.outcome, result.ticket.reference if result.ticket else None)

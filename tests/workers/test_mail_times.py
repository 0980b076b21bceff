"""Times in mail to customers read in the client's zone: its own, else the nearest ancestor's,
else the MSP's, else UTC; the Date: header stays a correct RFC 5322 date."""

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import pytest

from portal import tenancy
from portal.extensions import db
from portal.models import Ticket
from portal.models.base import utcnow
from portal.outbound.templates import save_template
from portal.services import commit
from tests.mailfactory import email
from workers.sending import send_due


@pytest.fixture
def desk(app, world, smtp_gateway):
    """Acme MSP (New York) > Contoso (no zone) > Contoso Berlin (Europe/Berlin) > Berlin Lab (no
    zone); one acknowledging mailbox; the sender run by hand."""
    app.config["TIDEMARK_JOBS_SYNC"] = False
    msp = world.msp("Acme MSP", timezone="America/New_York")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    berlin = world.client(contoso, "Contoso Berlin", allow=["berlin.contoso.com"])
    lab = world.client(berlin, "Berlin Lab", allow=["lab.berlin.contoso.com"])
    berlin.timezone = "Europe/Berlin"
    commit()
    box = world.mailbox(msp, response_address="help@acme.example")
    return msp, contoso, berlin, lab, box


def acknowledgement(world, box, smtp, sender: str, **mail) -> tuple[str, str | None, Ticket, object]:
    """Mail from `sender`, the acknowledgement sent: its text, its HTML, the ticket, the mail."""
    ticket = world.deliver(box, email(sender=sender, subject="Printer on fire", **mail)).ticket
    assert send_due() == {"sent": 1}
    sent = smtp.last().message
    db.session.expire_all()
    html = sent.get_body(("html",))
    return sent.get_body(("plain",)).get_content(), html and html.get_content(), db.session.get(Ticket, ticket.id), sent


def local(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def test_the_acknowledgement_to_a_berlin_client_shows_berlin_time(world, desk, smtp_gateway):
    *_, box = desk
    text, html, ticket, mail = acknowledgement(world, box, smtp_gateway, "anna@berlin.contoso.com")
    opened = local(ticket.created_at, "Europe/Berlin")
    assert opened[-4:] in ("CEST", " CET")
    assert f"Opened:   {opened}" in text and opened in html
    assert "UTC" not in text and "+00:00" not in text and local(ticket.created_at, "America/New_York") not in text
    # The Date: header: RFC 5322, the moment it went out.
    date = parsedate_to_datetime(mail["Date"])
    assert date.tzinfo is not None and abs(date - utcnow()) < timedelta(minutes=5)


def test_a_sub_client_without_a_zone_inherits_its_parents(world, desk, smtp_gateway):
    *_, box = desk
    text, _html, ticket, _mail = acknowledgement(world, box, smtp_gateway, "max@lab.berlin.contoso.com")
    assert ticket.client.name == "Berlin Lab" and ticket.client.timezone is None
    assert f"Opened:   {local(ticket.created_at, 'Europe/Berlin')}" in text


def test_a_client_with_no_zone_up_to_the_msp_reads_the_msps_then_utc(world, desk, smtp_gateway):
    msp, contoso, *_ , box = desk
    text, _html, ticket, _mail = acknowledgement(world, box, smtp_gateway, "alice@contoso.com")
    assert f"Opened:   {local(ticket.created_at, 'America/New_York')}" in text
    msp.timezone = None
    commit()
    assert tenancy.timezone_of(contoso) == ZoneInfo("UTC")
    # A name the system no longer knows is passed over: the next one up is in effect.
    contoso.timezone = "Mars/Olympus_Mons"
    msp.timezone = "Asia/Tokyo"
    assert tenancy.timezone_of(contoso) == ZoneInfo("Asia/Tokyo")


def test_the_customers_message_date_reads_in_the_clients_zone(world, desk, smtp_gateway):
    """message.date went out as an ISO string with +00:00; it is the client's local time now."""
    msp, *_, box = desk
    save_template(msp, "ticket_created", "We got it\nYou wrote on {{ message.date }}.", "", True, None)
    commit()
    written = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)  # summer: CEST in Berlin
    text, *_ = acknowledgement(world, box, smtp_gateway, "anna@berlin.contoso.com", date=written)
    assert text.startswith(f"You wrote on {local(written, 'Europe/Berlin')}.") and "08:30 CEST" in text

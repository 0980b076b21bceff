"""Times on the pages read in the viewer's zone (their own, else their MSP's, else UTC), each a
<time> with the UTC moment as its title; the history a reply quotes reads in the client's zone."""

import re
from datetime import UTC, datetime
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Message, User
from portal.services import commit
from tests.mailfactory import email

# A winter moment: New York is on EST, Berlin on CET, Kolkata always IST.
AT = datetime(2026, 1, 15, 17, 45, tzinfo=UTC)


def local(zone: str, at: datetime = AT) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


@pytest.fixture
def seeded(world, acme):
    """A Contoso ticket whose mail, ticket and last activity happened at AT."""
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer", body="It prints blank.")).ticket
    ticket.created_at = ticket.updated_at = AT
    for m in db.session.scalars(select(Message).where(Message.ticket_id == ticket.id)):
        m.created_at = m.sent_at = AT
    commit()
    return ticket


def zone_of_tom(zone: str | None) -> None:
    db.session.scalar(select(User).where(User.email == "tom@acme.example")).timezone = zone
    commit()


def visible(page: str) -> str:
    """What a person reads: the text without tags and their attributes."""
    return unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)))


def test_a_user_in_new_york_reads_the_ticket_times_in_new_york(tech, seeded):
    zone_of_tom("America/New_York")
    expected = local("America/New_York")
    assert expected.endswith("EST") and not expected.startswith("2026-01-15 17:45")
    page = tech.get(f"/tickets/{seeded.reference}").get_data(as_text=True)
    time_tag = f'<time datetime="2026-01-15T17:45:00Z" title="2026-01-15 17:45 UTC">{expected}</time>'
    assert page.count(time_tag) >= 2  # the mail in the conversation and the ticket's "Opened"
    assert time_tag in tech.get("/tickets").get_data(as_text=True)  # the list's "Updated"
    for name in ("conversation", "facts"):  # the parts a live page fetches again
        assert time_tag in tech.get(f"/tickets/{seeded.reference}/parts/{name}").get_data(as_text=True)


def test_a_user_without_a_zone_reads_the_msps_then_utc(tech, seeded, acme):
    acme.msp.timezone = "Asia/Kolkata"
    commit()
    page = tech.get(f"/tickets/{seeded.reference}").get_data(as_text=True)
    assert f">{local('Asia/Kolkata')}</time>" in page and local("Asia/Kolkata").endswith("IST")
    acme.msp.timezone = None
    commit()
    page = tech.get(f"/tickets/{seeded.reference}").get_data(as_text=True)
    assert ">2026-01-15 17:45 UTC</time>" in page and "IST" not in page
    # A zone this system no longer knows is passed over for the next one.
    acme.msp.timezone = "Europe/Berlin"
    zone_of_tom("Mars/Olympus_Mons")
    assert f">{local('Europe/Berlin')}</time>" in tech.get("/tickets").get_data(as_text=True)


def test_no_raw_utc_where_a_local_time_is_expected(tech, seeded, acme):
    zone_of_tom("America/New_York")
    paths = ["/", "/tickets", f"/tickets/{seeded.reference}", f"/tickets/{seeded.reference}/parts/conversation",
             f"/tickets/{seeded.reference}/parts/staff", f"/tickets/{seeded.reference}/parts/facts",
             "/unprocessed"]
    for path in paths:
        resp = tech.get(path)
        assert resp.status_code == 200, path
        page = resp.get_data(as_text=True)
        assert "+00:00" not in page, path
        assert "UTC" not in visible(page), path
    assert local("America/New_York") in visible(tech.get(f"/tickets/{seeded.reference}").get_data(as_text=True))


def test_the_quoted_history_reads_in_the_clients_zone_not_the_technicians(tech, seeded, acme):
    zone_of_tom("Asia/Tokyo")
    acme.msp.timezone = "America/New_York"
    acme.contoso.timezone = "Europe/Berlin"
    commit()
    quoted = tech.get(f"/tickets/{seeded.reference}/history").get_data(as_text=True)
    assert f"On {local('Europe/Berlin')}, alice@contoso.com wrote:" in quoted
    assert "JST" not in quoted and "EST" not in quoted
    # A client without a zone of its own: the MSP's.
    acme.contoso.timezone = None
    commit()
    assert f"On {local('America/New_York')}," in tech.get(f"/tickets/{seeded.reference}/history").get_data(as_text=True)


def test_the_template_preview_reads_in_the_edited_clients_zone(admin, world, msp):
    msp.timezone = "Europe/Berlin"
    commit()
    child = world.client(msp, "Contoso")
    body = admin.post(f"/clients/{child.id}/emails/ticket_created/check",
                      {"text_source": "Subject\nOpened {{ ticket.created }}", "html_source": ""}, htmx=True)
    text = body.get_data(as_text=True)
    sample = datetime(2024, 3, 5, 14, 21, tzinfo=UTC)  # the sample ticket's
    assert body.status_code == 200 and f"Opened {local('Europe/Berlin', sample)}" in text, text

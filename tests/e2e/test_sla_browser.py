"""Service levels in the browser: an admin creates a policy on Settings › Service levels (a
wrong span is named beside its weekday), chooses it on a client, and the SLA card of a new
ticket shows its due times; a technician gives the ticket another policy and the card follows."""

import re

import pytest
from playwright.sync_api import expect

from portal.extensions import db
from portal.models import Client, Ticket
from portal.services import commit
from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def sign_in(page, live_server, address):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/sign-in"))


def test_an_admin_creates_a_policy_chooses_it_and_the_ticket_shows_its_clock(live_server, page, world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    box = world.mailbox(msp, acknowledge=False)
    world.user(msp, email="ann@acme.example", role="admin")
    commit()
    sign_in(page, live_server, "ann@acme.example")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Service levels").click()
    expect(page).to_have_url(re.compile(r"/settings/service-levels$"))
    expect(page.locator("#sla-none-yet")).to_contain_text("No SLA policies yet")
    page.get_by_role("link", name="New SLA policy").click()
    page.get_by_label("Name").fill("Around the clock")
    page.get_by_label("Time zone").select_option("Europe/Berlin")
    for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
        page.get_by_label(day, exact=True).fill("00:00-24:00")
    page.get_by_label("Monday", exact=True).fill("nine to five")
    page.get_by_label("normal first response hours").fill("2")
    page.get_by_label("normal resolution hours").fill("8")
    page.get_by_label("normal resolution minutes").fill("30")
    page.get_by_role("button", name="Create policy").click()
    expect(page.locator("#hours_mon-error")).to_contain_text("'nine to five' is not a span")
    page.get_by_label("Monday", exact=True).fill("00:00-12:00, 12:00-24:00")
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_text("SLA policy Around the clock saved.")).to_be_visible()
    expect(page.locator("#sla-policies")).to_contain_text("normal: 2 h 00 min / 8 h 30 min")

    page.goto(f"{live_server}/clients/{contoso.id}/edit")
    page.get_by_label("SLA policy").select_option(label="Around the clock")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#client-sla")).to_contain_text("Around the clock")

    db.session.expire_all()  # what the pages changed, as a fetch job's new session reads it
    ticket = world.deliver(box, email(sender="alice@contoso.com", subject="Printer on fire")).ticket
    ticket = db.session.get(Ticket, ticket.id)
    assert ticket.first_response_due_at is not None
    page.goto(f"{live_server}/tickets/{ticket.reference}")
    card = page.locator("#ticket-sla")
    expect(card.locator("#sla-policy-name")).to_have_text("Around the clock")
    # Open all week: two hours of business time, less the seconds since the mail arrived.
    expect(card).to_contain_text(re.compile(r"First response due[\s\S]*1 h 5\d min left"))
    expect(card).to_contain_text(re.compile(r"Resolution due[\s\S]*8 h [23]\d min left"))

    # Without a policy the card says so; choosing one again brings the clocks back (in place).
    card.get_by_label("Policy").select_option(label="none")
    card.get_by_role("button", name="Change policy").click()
    expect(page.locator("#sla-none")).to_contain_text("No SLA policy")
    page.locator("#ticket-sla").get_by_label("Policy").select_option(label="Around the clock")
    page.locator("#ticket-sla").get_by_role("button", name="Change policy").click()
    expect(page.locator("#sla-policy-name")).to_have_text("Around the clock")
    expect(page.locator("#history")).to_contain_text("Around the clock")
    assert db.session.get(Client, contoso.id).sla_policy_id is not None

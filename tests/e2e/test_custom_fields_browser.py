"""Custom fields in the browser (issue #18): a technician fills a field on the ticket in place, and
an admin adds an extraction rule to a route that then fills the field from new mail."""

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import TicketFieldValue
from portal.services import commit
from portal.services import custom_fields as cf
from tests.conftest import PASSWORD
from tests.mailfactory import email

pytestmark = pytest.mark.e2e


def sign_in(page, live_server, address):
    page.goto(live_server + "/sign-in")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_field_is_edited_on_the_ticket_and_a_rule_added_on_a_route(live_server, page, world):
    msp = world.msp("Acme MSP")
    cf.save_field(msp, cf.FieldInput("Site", "choice", ["Berlin", "Paris"]), actor=None)
    cf.save_field(msp, cf.FieldInput("Hours", "number"), actor=None)
    commit()
    box = world.mailbox(msp, acknowledge=False, routes=[{"name": "Everything else", "client": msp, "fallback": True}])
    world.user(msp, email="ann@acme.example", role="admin")
    ticket = world.deliver(box, email(subject="Printer")).ticket
    sign_in(page, live_server, "ann@acme.example")

    page.goto(f"{live_server}/tickets/{ticket.reference}")
    page.evaluate("window.samePage = true")
    page.get_by_label("Hours").fill("many")
    page.get_by_role("button", name="Save fields").click()
    expect(page.locator("#ticket-custom-fields .errors")).to_contain_text("Hours: not a number.")
    page.get_by_label("Hours").fill("2.5")
    page.get_by_label("Site").select_option("Paris")
    page.get_by_role("button", name="Save fields").click()
    expect(page.get_by_text(f"{ticket.reference}: Site, Hours changed.")).to_be_visible()
    assert page.evaluate("window.samePage") is True  # changed in place
    expect(page.locator("#history")).to_contain_text("Paris")

    page.goto(f"{live_server}/mailboxes/{box.id}")
    page.get_by_role("link", name="Edit Everything else").click()
    page.get_by_label("Extraction rules").fill("body | field:Site | Office: (?P<site>\\w+)")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Route Everything else saved.")).to_be_visible()

    new = world.deliver(box, email(subject="Scanner", body="Office: berlin\n")).ticket
    db.session.expire_all()
    assert db.session.scalar(select(TicketFieldValue.value).where(TicketFieldValue.ticket_id == new.id)) == "Berlin"

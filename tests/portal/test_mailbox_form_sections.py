"""The mailbox form in sections (portal.mailboxes.sections): essentials open, a section holding
an error open after a refused save, and each summary a one-line digest of the values inside."""

import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import Mailbox
from tests.portal.test_mailbox_forms import form


def sections(page: str) -> dict[str, tuple[bool, str]]:
    """Per section key: (open, the summary's digest)."""
    found = {}
    for tag, body in re.findall(r'(<details class="form-section"[^>]*>)\s*<summary>(.*?)</summary>', page, re.S):
        key = re.search(r'data-section="(\w+)"', tag).group(1)
        digest = re.search(r'<span class="digest">(.*?)</span>', body)
        found[key] = (" open" in tag, digest.group(1) if digest else "")
    return found


def test_a_new_mailbox_shows_the_essentials_open_and_the_rest_closed_with_their_digests(admin, msp):
    page = admin.get("/mailboxes/new").get_data(as_text=True)
    shown = sections(page)
    assert list(shown) == ["addresses", "server", "fetching", "tickets", "replies", "status"]
    assert {k for k, (is_open, _) in shown.items() if is_open} == {"addresses", "server"}
    assert shown["server"][1] == "IMAP · no server yet · SSL/TLS · password"
    assert shown["fetching"][1] == "INBOX · every 60 s · mark as read"
    assert shown["tickets"][1] == "Acme MSP · new · normal · acknowledged"
    assert shown["status"][1] == "Draft: saved, not fetched"
    # Every field is still on the page, by its name, inside the sections.
    for name in ("address", "host", "folders", "poll_interval", "client_id", "response_address", "status",
                 "alert_recipients", "oauth_client_id"):
        assert f'name="{name}"' in page


def test_an_existing_mailbox_digests_its_stored_values(admin, msp):
    admin.post("/mailboxes/new", form(msp, port="1993", security="starttls", response_address="desk@acme.example",
                                      reply_to="answers@acme.example"))
    box = db.session.scalar(select(Mailbox))
    assert box.reply_to == "answers@acme.example"
    shown = sections(admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True))
    assert shown["addresses"][1] == "support@acme.example · 2 aliases · incoming and outgoing"
    assert shown["server"][1] == "IMAP · imap.acme.example:1993 · STARTTLS · password"
    assert shown["fetching"][1] == "INBOX, Partners · every 120 s · move to Done"
    assert shown["tickets"][1] == "Acme MSP · open · high · incident · acknowledged"
    assert shown["replies"][1] == "from desk@acme.example · Reply-To answers@acme.example · plus-addressing mixed"
    assert shown["status"][1] == "Draft: saved, not fetched · 1 alert recipient"


def test_a_reply_to_that_is_no_address_is_refused_in_the_replies_section(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, reply_to="answers at acme"))
    assert resp.status_code == 422
    shown = sections(resp.get_data(as_text=True))
    assert shown["replies"][0] and db.session.scalar(select(Mailbox)) is None


def test_a_refused_save_opens_the_sections_holding_an_error_and_only_those(admin, msp):
    resp = admin.post("/mailboxes/new", form(msp, poll_interval="often", alert_recipients="not an address"))
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    shown = sections(page)
    assert {k for k, (is_open, _) in shown.items() if is_open} == {"addresses", "server", "fetching", "status"}
    fetching = page[page.index('data-section="fetching"'):page.index('data-section="tickets"')]
    assert 'id="poll_interval-error"' in fetching
    # The same with htmx: the fragment comes back with the section open.
    resp = admin.post("/mailboxes/new", form(msp, client_id="99999"), headers={"HX-Request": "true"})
    assert resp.status_code == 422
    shown = sections(resp.get_data(as_text=True))
    assert shown["tickets"][0] and not shown["fetching"][0]

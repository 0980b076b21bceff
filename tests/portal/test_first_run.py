"""The dashboard's first-run checklist (portal/services/first_run.py): each step ticks as it is
done, the list goes once all are, and only the signed-in MSP's records count."""

import re

from portal.outbound.servers import save_smtp_server
from portal.services import audit, commit
from portal.services.first_run import checklist


def steps(page: str) -> dict[str, str]:
    """data-step -> "done" or "to-do", as the page shows them."""
    return {key: state for state, key in re.findall(r'<li class="(done|to-do)" data-step="([^"]+)"', page)}


def test_the_steps_tick_as_they_are_done_and_the_list_goes_when_all_are(app, world, browser, smtp_server, redis):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    browser.sign_in("ana@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert steps(page) == dict.fromkeys(("outgoing", "mailbox", "route", "test mail"), "to-do")
    assert "Every active mailbox fetched without error" not in page and "No mailbox yet" in page
    assert 'href="/settings/mail">Set an outgoing server' in page  # the one admin of the one MSP may set it

    save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                      "from": "gateway@installation.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    assert steps(browser.get("/").get_data(as_text=True))["outgoing"] == "done"

    world.client(msp, "Contoso", allow=["contoso.com"])
    assert steps(browser.get("/").get_data(as_text=True))["route"] == "done"

    box = world.mailbox(msp, acknowledge=False)
    page = browser.get("/").get_data(as_text=True)
    assert steps(page) == {"outgoing": "done", "mailbox": "done", "route": "done", "test mail": "to-do"}
    assert f'href="/mailboxes/{box.id}">Send a test email' in page

    refused = browser.post("/settings/mail/test", {"recipient": "not an address"}, htmx=True)
    assert "Not sent" in refused.get_data(as_text=True)
    assert steps(browser.get("/").get_data(as_text=True))["test mail"] == "to-do"  # a failed test is not done
    sent = browser.post("/settings/mail/test", {"recipient": "qa@acme.example"}, htmx=True)
    assert "Sent to qa@acme.example" in sent.get_data(as_text=True)
    page = browser.get("/").get_data(as_text=True)
    assert 'id="first-run"' not in page and steps(page) == {}
    assert "Every active mailbox fetched without error" in page


def test_a_route_alone_ticks_its_step(world):
    msp = world.msp("Acme MSP")
    world.mailbox(msp, routes=[{"name": "Everything", "client": msp, "fallback": True}], acknowledge=False)
    state = checklist(msp.id)
    assert {s.key: s.done for s in state.steps} == {"outgoing": False, "mailbox": True, "route": True,
                                                    "test mail": False}
    assert state.has_mailbox and not state.done


def test_another_msps_setup_never_counts(world):
    acme, other = world.msp("Acme MSP"), world.msp("Other MSP")
    world.client(other, "Their client", allow=["theirs.example"])
    box = world.mailbox(other, address="help@other.example", acknowledge=False)
    audit.record(None, other.id, "mailbox", box.id, "test email sent")
    commit()
    assert all(s.done for s in checklist(other.id).steps if s.key != "outgoing")
    mine = checklist(acme.id)
    assert [s.key for s in mine.steps if s.done] == [] and mine.first_mailbox_id is None


def test_a_technician_sees_the_steps_without_links_to_admin_pages(world, browser):
    msp = world.msp("Acme MSP")
    world.user(msp, email="tom@acme.example", role="technician")
    browser.sign_in("tom@acme.example")
    page = browser.get("/").get_data(as_text=True)
    assert steps(page) == dict.fromkeys(("outgoing", "mailbox", "route", "test mail"), "to-do")
    assert "An admin of your MSP sets these up." in page
    assert re.findall(r'data-step="mailbox">\s*<span class="tick"[^>]*>○</span>\s*<span>([^<]+)</span>', page) == [
        "Add your first mailbox"]  # named, not a link to a page a technician may not open
    world.mailbox(msp, acknowledge=False)  # an admin added one: the technician sees it ticked
    page = browser.get("/").get_data(as_text=True)
    assert steps(page)["mailbox"] == "done" and steps(page)["outgoing"] == "to-do"
    assert steps(page) == {s.key: "done" if s.done else "to-do" for s in checklist(msp.id).steps}

"""The BCC trap: teaching the allow-list does not place the sender's next BCC'd email, because
only a wildcard route can. The unprocessed page and the routing check say so, and offer the fix
(the wildcard route, then the email decided again); a client can be created from the page too.
Mail arrives through the real ingest path (stored as fetched, then decided)."""

import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, Client, Message, Route
from portal.unprocessed.forms import BccRouteForm, NewClientForm
from tests.mailfactory import email

SENDER = "it@newcustomer.example"


def bcc(world, box, sender=SENDER, subject="Need help"):
    return world.deliver(box, email(sender=sender, to=["someone@elsewhere.example"], subject=subject)).message


@pytest.fixture
def admin(browser, bcc_desk):
    browser.sign_in("ann@acme.example")
    return browser


def text(resp):
    return resp.get_data(as_text=True)


def test_after_teaching_the_next_bcc_mail_names_the_cause_and_the_wildcard_route_places_it(world, admin, bcc_desk):
    msp, _contoso, box = bcc_desk
    newco = world.client(msp, "Newco")
    first = bcc(world, box, subject="first")
    resp = admin.post(f"/unprocessed/{first.id}/teach", {"teach-client_id": str(newco.id), "teach-scope": "domain"})
    assert resp.status_code == 303
    assert db.session.get(Message, first.id).outcome == "created"  # teaching placed this one

    second = bcc(world, box, subject="second")  # the trap: still waiting
    assert second.outcome == "unprocessed"
    page = text(admin.get(f"/unprocessed/{second.id}"))
    assert "sent to desk@acme.example by BCC" in page and "no wildcard route for this sender" in page
    assert "Add the wildcard route and decide again" in page and "hx-confirm=" in page
    assert re.search(rf'<option selected value="{newco.id}">|<option value="{newco.id}" selected', page)

    resp = admin.post(f"/unprocessed/{second.id}/bcc-route", {"bcc-client_id": str(newco.id), "bcc-scope": "domain"})
    assert resp.status_code == 303 and "/tickets/" in resp.headers["Location"]
    placed = db.session.get(Message, second.id)
    assert placed.outcome == "created" and placed.ticket.client_id == newco.id
    route = db.session.scalar(select(Route).where(Route.name == "BCC from newcustomer.example"))
    assert (route.recipients, route.senders, route.client_id) == (["*"], ["newcustomer.example"], newco.id)
    assert [r.name for r in sorted(box.routes, key=lambda r: r.position)][-1] == "Everything else"  # fallback last
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "route BCC from newcustomer.example added"))
    assert entry.actor_label == "ann@acme.example" and entry.record_id == box.id
    assert "The email is now on" in text(admin.get(resp.headers["Location"]))

    third = world.deliver(box, email(sender="boss@newcustomer.example", to=["x@elsewhere.example"]))
    assert third.outcome == "created" and third.ticket.client_id == newco.id  # decided on arrival now


def test_a_client_is_created_from_the_page_and_the_bcc_fix_then_offers_it(world, admin, bcc_desk):
    _msp, _contoso, box = bcc_desk
    waiting = bcc(world, box, sender="it@mail.newcustomer.co.uk")
    page = text(admin.get(f"/unprocessed/{waiting.id}"))
    assert 'value="Newcustomer"' in page  # the name comes from the sender's domain
    resp = admin.post(f"/unprocessed/{waiting.id}/new-client", {"client-name": "Newcustomer Ltd"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/unprocessed/{waiting.id}")
    client = db.session.scalar(select(Client).where(Client.name == "Newcustomer Ltd"))
    assert [e.value for e in client.allow_entries] == ["mail.newcustomer.co.uk"]
    after = text(admin.get(resp.headers["Location"]))
    assert "Created the client Newcustomer Ltd" in after and "still unprocessed" in after  # BCC'd: still waiting
    assert re.search(rf'<option selected value="{client.id}">|<option value="{client.id}" selected', after)
    resp = admin.post(f"/unprocessed/{waiting.id}/bcc-route", {"bcc-client_id": str(client.id), "bcc-scope": "domain"})
    assert db.session.get(Message, waiting.id).ticket.client_id == client.id


def test_the_fixes_are_for_admins_of_the_same_msp_with_csrf(world, browser, make_browser, bcc_desk):
    msp, contoso, box = bcc_desk
    waiting = bcc(world, box)
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert "Add the wildcard route" not in text(tech.get(f"/unprocessed/{waiting.id}"))
    assert tech.post(f"/unprocessed/{waiting.id}/bcc-route", {"bcc-client_id": str(contoso.id),
                                                              "bcc-scope": "domain"}).status_code == 403
    assert tech.post(f"/unprocessed/{waiting.id}/new-client", {"client-name": "X"}).status_code == 403

    browser.sign_in("ann@acme.example")
    refused = browser.post(f"/unprocessed/{waiting.id}/bcc-route", {"bcc-client_id": str(contoso.id),
                                                                    "bcc-scope": "domain"}, token=False)
    assert refused.status_code == 302  # CSRF without script: back, with a message, nothing added
    other = world.msp("Other MSP")
    theirs = bcc(world, world.mailbox(other, address="help@other.example", routes=[
        {"name": "All", "client": other, "fallback": True}]))
    for url, data in ((f"/unprocessed/{theirs.id}/bcc-route", {"bcc-client_id": str(contoso.id), "bcc-scope": "domain"}),
                      (f"/unprocessed/{theirs.id}/new-client", {"client-name": "Mine now"})):
        assert browser.post(url, data).status_code == 404
    assert browser.get(f"/unprocessed/{theirs.id}").status_code == 404
    # Their client cannot be the target of our route either.
    resp = browser.post(f"/unprocessed/{waiting.id}/bcc-route", {"bcc-client_id": str(other.id), "bcc-scope": "domain"})
    assert resp.status_code == 422
    assert db.session.scalar(select(Route).where(Route.name.like("BCC from%"))) is None
    assert db.session.get(Message, theirs.id).outcome == "unprocessed"


def test_the_routing_check_names_the_cause_and_links_to_the_prefilled_route(world, admin, bcc_desk):
    _msp, _contoso, box = bcc_desk
    resp = admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": SENDER,
                                             "to": "someone@elsewhere.example", "subject": "x"})
    page = text(resp)
    assert "The real cause: this email reaches the mailbox by BCC" in page
    link = f"/mailboxes/{box.id}/routes/new?bcc_sender=newcustomer.example"
    assert link in page
    form = text(admin.get(link))
    assert "BCC from newcustomer.example" in form and re.search(r"<textarea[^>]*>\s*\*\s*</textarea>", form)
    named = text(admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": SENDER,
                                                   "to": "desk@acme.example", "subject": "x"}))
    assert "The real cause" not in named  # it names the mailbox: the fallback takes it


def test_a_long_route_name_still_leaves_a_history_line(world, bcc_desk):
    from portal.services import commit
    from portal.services.routes import add_bcc_route

    msp, contoso, box = bcc_desk
    route, added = add_bcc_route(box, contoso, "helpdesk.of.a.very.long.customer-domain.example", actor=None)
    commit()
    assert added and route.name == "BCC from helpdesk.of.a.very.long.customer-domain.example"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action.like("route BCC from%")))
    assert len(entry.action) == 40 and entry.action.endswith("…") and entry.changes["name"][1] == route.name
    again, added_again = add_bcc_route(box, contoso, "helpdesk.of.a.very.long.customer-domain.example", actor=None)
    assert again.id == route.id and not added_again


def test_the_bcc_fix_offers_the_client_whose_allow_list_names_an_international_sender(world, admin, bcc_desk):
    """The allow-list holds domains in their ASCII form (xn--…): the sender is read the same way
    as routing reads it, so the client that lists bücher.example is the one offered."""
    msp, _contoso, box = bcc_desk
    buecher = world.client(msp, "Bücher", allow=["bücher.example"])
    raw = email(sender="alice@contoso.com", to=["someone@elsewhere.example"])
    waiting = world.deliver(box, raw.replace(b"From: alice@contoso.com", "From: it@bücher.example".encode())).message
    assert waiting.outcome == "unprocessed"
    page = text(admin.get(f"/unprocessed/{waiting.id}"))
    assert "by BCC" in page
    assert re.search(rf'<option selected value="{buecher.id}">|<option value="{buecher.id}" selected', page)


@pytest.mark.parametrize("sender", ["jo.smith@gmail.com", "jo.smith@Outlook.com", "jo.smith@eu.gmx.net"])
def test_a_new_client_for_a_freemail_sender_allows_the_address_not_the_whole_service(world, admin, bcc_desk, sender):
    _msp, _contoso, box = bcc_desk
    waiting = bcc(world, box, sender=sender)
    resp = admin.post(f"/unprocessed/{waiting.id}/new-client", {"client-name": "Jo Smith Consulting"})
    assert resp.status_code == 303
    client = db.session.scalar(select(Client).where(Client.name == "Jo Smith Consulting"))
    assert [(e.kind, e.value) for e in client.allow_entries] == [("address", sender.lower())]
    assert f"allowing {sender.lower()}." in text(admin.get(resp.headers["Location"]))


@pytest.mark.parametrize("form", ["bcc", "teach"])
def test_a_wrong_scope_is_said_under_its_fieldset_in_both_fixes(world, admin, bcc_desk, form):
    _msp, contoso, box = bcc_desk
    waiting = bcc(world, box)
    url = f"/unprocessed/{waiting.id}/{'bcc-route' if form == 'bcc' else 'teach'}"
    resp = admin.post(url, {f"{form}-client_id": str(contoso.id), f"{form}-scope": "everyone"}, htmx=True)
    body = text(resp)
    assert resp.status_code == 422
    fieldset = body[body.index(f'id="{form}-scope-domain"') - 400:]
    assert f'aria-describedby="{form}-scope-error"' in fieldset[:400]
    assert re.search(rf'<ul class="errors" id="{form}-scope-error"><li>[^<]+</li></ul>', body)


def test_the_fix_forms_place_the_services_messages_by_their_own_fields(app):
    """The services name fields as they know them; each form says where its messages go, and
    what it has no field for goes above it (no view remaps keys)."""
    with app.test_request_context():
        bcc_form = BccRouteForm(prefix="bcc")
        bcc_form.place_errors({"client_id": ["a"], "scope": ["b"], "name": ["c"], "": ["d"]})
        assert bcc_form.service_errors == {"client_id": ["a"], "scope": ["b"], "": ["c", "d"]}
        client_form = NewClientForm(prefix="client")
        client_form.place_errors({"allow": ["gmail is not a domain"], "": ["e"]})
        assert client_form.service_errors == {"name": ["gmail is not a domain"], "": ["e"]}

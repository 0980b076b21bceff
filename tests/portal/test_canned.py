"""Canned responses in the browser: the admin pages per client, and the picker on a ticket."""

from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, CannedResponse
from portal.services import canned, commit
from tests.mailfactory import email


def test_the_templates_page_links_to_the_canned_responses(admin, tree):
    contoso = tree[1]
    page = admin.get(f"/clients/{contoso.id}/emails").get_data(as_text=True)
    assert f"/clients/{contoso.id}/emails/canned" in page
    empty = admin.get(f"/clients/{contoso.id}/emails/canned").get_data(as_text=True)
    assert "has no canned responses yet" in empty


def test_an_admin_creates_edits_and_removes_a_response(admin, tree):
    msp, contoso, berlin = tree
    form = admin.get(f"/clients/{contoso.id}/emails/canned/new").get_data(as_text=True)
    assert 'name="html"' in form and 'name="text"' in form and "composer.js" in form
    resp = admin.post(f"/clients/{contoso.id}/emails/canned/new",
                      {"name": "Restart", "html": "<p>Please <b>restart</b> it.</p><script>x()</script>", "shared": "1"})
    assert resp.status_code == 303
    saved = db.session.scalar(select(CannedResponse))
    assert saved.client_id == contoso.id and saved.body_html == "<p>Please <b>restart</b> it.</p>" and saved.shared
    listing = admin.get(f"/clients/{berlin.id}/emails/canned").get_data(as_text=True)
    assert "Restart" in listing and "shared by" in listing  # inherited, not editable there
    assert f"/canned/{saved.id}/delete" not in listing

    resp = admin.post(f"/clients/{contoso.id}/emails/canned/{saved.id}",
                      {"name": "Restart", "text": "Switch it off.\nThen on.", "html": ""})
    assert resp.status_code == 303
    db.session.refresh(saved)
    assert saved.body_html == "Switch it off.<br>Then on." and saved.shared is False

    page = admin.get(f"/clients/{contoso.id}/emails/canned").get_data(as_text=True)
    assert "hx-confirm=\"Remove the canned response Restart of Contoso?" in page
    resp = admin.post(f"/clients/{contoso.id}/emails/canned/{saved.id}/delete", htmx=True)
    assert resp.status_code == 200 and resp.headers["HX-Redirect"].endswith(f"/clients/{contoso.id}/emails/canned")
    assert db.session.scalar(select(CannedResponse)) is None
    actions = db.session.scalars(select(AuditEntry.action).where(AuditEntry.record_id == contoso.id)).all()
    assert actions.count("canned response saved") == 2 and "canned response removed" in actions


def test_a_wrong_form_comes_back_with_the_message_next_to_the_field(admin, tree):
    contoso = tree[1]
    canned.save(contoso, name="Restart", text="x")
    commit()
    resp = admin.post(f"/clients/{contoso.id}/emails/canned/new", {"name": "restart", "text": ""}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "<html" not in body
    assert 'id="canned-name-error"' in body and "already has a response called" in body
    assert 'id="canned-text-error"' in body and "Write the response." in body
    assert db.session.scalar(select(CannedResponse).where(CannedResponse.name == "restart")) is None


def test_technicians_get_403_and_other_msps_404(world, make_browser, admin, tree):
    msp, contoso, _berlin = tree
    mine = canned.save(contoso, name="Restart", text="x")
    other = world.msp("Other MSP")
    theirs = canned.save(other, name="Theirs", text="y")
    commit()
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    for url in (f"/clients/{contoso.id}/emails/canned", f"/clients/{contoso.id}/emails/canned/new",
                f"/clients/{contoso.id}/emails/canned/{mine.id}"):
        assert tech.get(url).status_code == 403
    assert tech.post(f"/clients/{contoso.id}/emails/canned/{mine.id}/delete").status_code == 403
    assert admin.get(f"/clients/{other.id}/emails/canned").status_code == 404
    assert admin.get(f"/clients/{contoso.id}/emails/canned/{theirs.id}").status_code == 404
    assert admin.post(f"/clients/{other.id}/emails/canned/{theirs.id}/delete").status_code == 404
    # A response of one client is not edited through another client's URL.
    assert admin.get(f"/clients/{msp.id}/emails/canned/{mine.id}").status_code == 404
    assert db.session.get(CannedResponse, theirs.id) is not None


def test_the_ticket_picker_offers_what_the_ticket_client_may_use(world, make_browser, tree):
    msp, contoso, berlin = tree
    box = world.mailbox(msp, acknowledge=False)
    shared = canned.save(msp, name="Greeting", html="<p>Hello <i>from Acme</i></p>", shared=True)
    private = canned.save(msp, name="Acme internal", text="only for Acme's own tickets", shared=False)
    near = canned.save(contoso, name="greeting", text="Hallo from Contoso", shared=True)
    commit()
    result = world.deliver(box, email(sender="eva@berlin.contoso.com", subject="Printer"))
    ref = result.ticket.reference
    assert result.ticket.client_id == berlin.id
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    page = tech.get(f"/tickets/{ref}").get_data(as_text=True)
    assert f"/tickets/{ref}/canned/{near.id}" in page and "greeting (Contoso)" in page
    assert f"/canned/{shared.id}" not in page and f"/canned/{private.id}" not in page
    body = tech.get(f"/tickets/{ref}/canned/{near.id}")
    assert body.status_code == 200 and body.get_data(as_text=True) == "Hallo from Contoso"
    assert tech.get(f"/tickets/{ref}/canned/{private.id}").status_code == 404  # not shared down
    assert tech.get(f"/tickets/{ref}/canned/{shared.id}").status_code == 404  # replaced by the nearer one
